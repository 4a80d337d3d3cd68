"""Museum support sets with the known (mean-colour) embedder: exact centres, labels, similarities.

Solid images embed to their normalised colour (tests/support/known_embedder.py), so every centre
and similarity below is worked out by hand:

    Insect/specimen: red (1,0,0), yellow (1,1,0)/sqrt2, blue (0,0,1); k=2 -> K-means puts red and
                     yellow together: centre (cos 22.5deg, sin 22.5deg, 0); blue alone
    Insect/drawer:   two greys -> one centre (1,1,1)/sqrt3
    Plant/text_document: cyan (0,1,1)/sqrt2, magenta (1,0,1)/sqrt2 -> themselves
    _any/label:      green (0,1,0), for every area
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.digest import sha256_file
from pipeline.errors import ConfigError, InputError
from stages.filter.embedder import clear_cache, load_embedder
from stages.filter.museum import (
    SupportSet,
    build_and_save,
    build_support_set,
    cluster,
    format_summary,
    nearest,
    non_organism,
    scan_folder,
)
from tests.support.known_embedder import SPEC, KnownEmbedder, solid, unit

pytest.importorskip("sklearn")

C = math.cos(math.pi / 8)
S = math.sin(math.pi / 8)
R2 = 1 / math.sqrt(2)
R3 = 1 / math.sqrt(3)
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)

LAYOUT = {
    ("Insect", "specimen"): [RED, (255, 255, 0), BLUE],
    ("Insect", "drawer"): [(128, 128, 128), (64, 64, 64)],
    ("Plant", "text_document"): [(0, 255, 255), (255, 0, 255)],
    ("_any", "label"): [GREEN],
}


def make_folder(root: Path, layout=LAYOUT, fmt: str = "png") -> Path:
    for (area, label), colours in layout.items():
        folder = root / area / label
        folder.mkdir(parents=True)
        for i, colour in enumerate(colours):
            solid(colour).save(folder / f"img{i}.{fmt}")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "support")


@pytest.fixture
def support(folder: Path) -> SupportSet:
    return build_support_set(KnownEmbedder(), folder, k=2, seed=0)


def centres_of(support: SupportSet, area: str, label: str) -> np.ndarray:
    pairs = zip(support.areas, support.labels, strict=True)
    return support.centres[[a == area and lab == label for a, lab in pairs]]


def test_kmeans_centres_are_known(support):
    assert support.centres.dtype == np.float32
    np.testing.assert_allclose(centres_of(support, "Insect", "specimen"), [[0, 0, 1], [C, S, 0]], atol=1e-6)
    np.testing.assert_allclose(centres_of(support, "Insect", "drawer"), [[R3, R3, R3]], atol=1e-6)
    plant = centres_of(support, "Plant", "text_document")
    np.testing.assert_allclose(plant, [[0, R2, R2], [R2, 0, R2]], atol=1e-6)
    np.testing.assert_array_equal(centres_of(support, "_any", "label"), [[0, 1, 0]])
    np.testing.assert_allclose(np.linalg.norm(support.centres, axis=1), 1.0, atol=1e-6)
    assert support.images == {
        "Insect": {"drawer": 2, "specimen": 3}, "Plant": {"text_document": 2}, "_any": {"label": 1}
    }
    assert support.identity == KnownEmbedder().identity and (support.k, support.seed) == (2, 0)


def test_cluster_counts_and_means():
    # k = 1: the normalised mean of red and green
    mean = cluster(np.stack([unit(RED), unit(GREEN)]), k=1, seed=0)
    np.testing.assert_allclose(mean, [[R2, R2, 0]], atol=1e-7)
    # more clusters than images: one centre per image; identical images: one centre
    assert cluster(np.stack([unit(RED), unit(GREEN)]), k=3, seed=0).shape == (2, 3)
    assert cluster(np.stack([unit(RED)] * 4), k=3, seed=0).shape == (1, 3)


@pytest.mark.parametrize(
    ("area", "query", "label", "similarity"),
    [
        ("Insect", RED, "specimen", C),  # red vs the red/yellow centre
        ("Plant", RED, "text_document", R2),  # the specimen centre belongs to Insect: not a candidate
        (None, RED, "specimen", C),  # unknown area: every centre
        ("Fishes", RED, "specimen", C),  # an area without centres of its own: every centre
        ("insect", RED, "specimen", C),  # areas match without regard to case
        ("Insect", GREEN, "label", 1.0),  # the all-area centre is a candidate everywhere
        ("Plant", GREEN, "label", 1.0),
        ("Insect", (255, 255, 255), "drawer", 1.0),
        ("Plant", (255, 255, 255), "text_document", 2 / math.sqrt(6)),
        ("Insect", BLUE, "specimen", 1.0),
    ],
)
def test_nearest_label_and_similarity(support, area, query, label, similarity):
    labels, similarities = nearest(support, KnownEmbedder().embed([solid(query)]), [area])
    assert labels == [label]
    assert similarities[0] == pytest.approx(similarity, abs=1e-6)


def test_nearest_on_many_rows_and_no_rows(support):
    rows = np.stack([unit(RED), unit(RED), unit(GREEN)])
    assert nearest(support, rows, ["Insect", "Plant", None])[0] == ["specimen", "text_document", "label"]
    assert nearest(support, np.zeros((0, 3), np.float32), []) == ([], [])
    with pytest.raises(ValueError):
        nearest(support, rows, ["Insect"])


def test_non_organism():
    labels = {"drawer", "text_document"}
    assert non_organism("drawer", labels) and not non_organism("specimen", labels)


def test_save_load_round_trip(support, tmp_path):
    path = tmp_path / "sets" / "museum.npz"
    support.save(path)
    assert support.digest == sha256_file(path)
    loaded = SupportSet.load(path, KnownEmbedder().identity)
    np.testing.assert_array_equal(loaded.centres, support.centres)
    assert (loaded.labels, loaded.areas, loaded.identity) == (support.labels, support.areas, support.identity)
    assert (loaded.k, loaded.seed, loaded.images, loaded.digest) == (2, 0, support.images, support.digest)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_refuses_another_embedders_support_set(support, tmp_path):
    path = tmp_path / "museum.npz"
    support.save(path)
    other = KnownEmbedder(weights_path="other-weights").identity
    with pytest.raises(ConfigError, match="built with known mean-rgb 1, the configured embedder is") as err:
        SupportSet.load(path, other)
    assert "rebuild it with `tolpipe filter build-support-set`" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_corrupt_support_sets(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        SupportSet.load(tmp_path / "absent.npz", None)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a museum support set"):
        SupportSet.load(bad, None)
    incomplete = tmp_path / "incomplete.npz"
    meta = '{"format": "tolpipe museum support set", "version": 1}'
    np.savez(incomplete, centres=np.zeros((1, 3), np.float32), metadata=np.array(meta))
    with pytest.raises(InputError, match="KeyError"):
        SupportSet.load(incomplete, None)


def test_same_inputs_same_bytes(folder, tmp_path):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    build_support_set(KnownEmbedder(), folder, k=2, seed=0).save(first)
    build_support_set(KnownEmbedder(), folder, k=2, seed=0).save(second)
    assert first.read_bytes() == second.read_bytes()


def test_kmeans_with_many_noisy_images_is_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "noisy"
    for label, base in (("specimen", (200, 40, 40)), ("drawer", (40, 40, 200))):
        (folder / "Insect" / label).mkdir(parents=True)
        for i in range(12):
            colour = tuple(int(v) for v in np.clip(np.asarray(base) + rng.integers(-30, 30, 3), 0, 255))
            solid(colour).save(folder / "Insect" / label / f"{i:02d}.webp", lossless=True)
    a = build_support_set(KnownEmbedder(), folder, k=3, seed=5)
    b = build_support_set(KnownEmbedder(), folder, k=3, seed=5)
    assert a.to_bytes() == b.to_bytes()
    assert a.labels == ["drawer"] * 3 + ["specimen"] * 3
    assert nearest(a, np.stack([unit((255, 0, 0)), unit((0, 0, 255))]), ["Insect", "Insect"])[0] == [
        "specimen",
        "drawer",
    ]


def test_layout_errors(tmp_path):
    flat = tmp_path / "flat"
    (flat / "specimen").mkdir(parents=True)
    solid(RED).save(flat / "specimen" / "a.png")  # labels directly under the folder: ambiguous
    with pytest.raises(InputError, match="image directly in an area folder"):
        scan_folder(flat)
    empty = tmp_path / "empty"
    (empty / "Insect" / "drawer").mkdir(parents=True)
    (empty / "Insect" / "drawer" / "README.txt").write_text("no images here")
    with pytest.raises(InputError, match="label folder without images"):
        scan_folder(empty)
    broken = make_folder(tmp_path / "broken", {("Insect", "drawer"): [RED]})
    (broken / "Insect" / "drawer" / "zz.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="zz.jpg: not a readable image"):
        build_support_set(KnownEmbedder(), broken)


def test_scan_ignores_hidden_and_other_files(folder):
    (folder / "Insect" / "drawer" / ".DS_Store").write_bytes(b"x")
    (folder / "Insect" / "drawer" / "CREDITS.csv").write_text("file,author\n")
    (folder / "README.md").write_text("support set")
    files = scan_folder(folder)[("Insect", "drawer")]
    assert [p.name for p in files] == ["img0.png", "img1.png"]


def test_build_and_save_summary(folder, tmp_path):
    out = tmp_path / "museum.npz"
    info = build_and_save(KnownEmbedder(), folder, out, k=2, seed=0)
    assert info["digest"] == sha256_file(out)
    assert info["areas"]["Insect"]["specimen"] == {"images": 3, "centres": 2}
    assert info["areas"]["_any"]["label"] == {"images": 1, "centres": 1}
    assert (info["centres"], info["dim"]) == (6, 3)
    text = format_summary(info)
    assert "(every area)" in text and "specimen" in text and "3 images" in text


def test_known_embedder_through_the_python_spec(folder):
    clear_cache()
    embedder = load_embedder(SPEC, "", "cpu", 8)
    assert isinstance(embedder, KnownEmbedder)
    assert load_embedder(SPEC, "", "cpu", 8) is embedder  # loaded once per process
    built = build_support_set(embedder, folder, k=2).to_bytes()
    assert built == build_support_set(KnownEmbedder(), folder, k=2).to_bytes()
    clear_cache()
