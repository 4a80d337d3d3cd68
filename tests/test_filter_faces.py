"""Face filter of stage 04 (stages/filter/faces.py) with the real MTCNN weights on real photos.

Measured with facenet-pytorch 2.5.3 (CPU, shipped photos at <= 512 px): astronaut p=0.99585,
Grace Hopper p=0.99974 (squashed to 720x720: 0.99962, 0.99851). None of the 42 animal photos
gets a single box past the stage thresholds (0.9, 0.95, 0.95), under either rule; MTCNN's looser
defaults (0.6, 0.7, 0.7) find boxes on 4 of them, the strongest 0.86 (a crab). MTCNN takes about
20 ms per image at this size on 2 CPU threads, so the model tests run in a few seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from stages.filter.faces import (
    FaceDetector,
    FaceScores,
    FaceSettings,
    detector,
    face_drop,
)
from tests.support.photo_corpus import faces_dir, load_corpus

REPO = Path(__file__).resolve().parent.parent
needs_model = pytest.mark.skipif(
    importlib.util.find_spec("facenet_pytorch") is None, reason="needs the filters extra (facenet-pytorch)"
)
FACES = ("astronaut.jpg", "grace_hopper.jpg")
DEFAULT = FaceSettings()
SQUASHED = FaceSettings(rule="mean_squashed")


def load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def faces() -> dict[str, Image.Image]:
    return {name: load(faces_dir() / name) for name in FACES}


@pytest.fixture(scope="module")
def animals() -> dict[str, Image.Image]:
    photos = {photo.file_name: load(photo.path) for photo in load_corpus()}
    assert len(photos) == 42
    return photos


@pytest.fixture(scope="module")
def one_by_one(faces, animals) -> dict[str, FaceScores]:
    """Scores of every photo, each scored alone (the reference for the batching tests)."""
    model = detector(DEFAULT)
    return {name: model.score([im])[0] for name, im in {**faces, **animals}.items()}


# ---- decisions on real photos ------------------------------------------------------------------


@needs_model
@pytest.mark.parametrize("name", FACES)
def test_portrait_has_one_confident_face_and_is_dropped(name, one_by_one):
    scores = one_by_one[name]
    assert scores.face_count == 1
    assert scores.face_prob_max is not None and scores.face_prob_max >= 0.985
    assert scores.face_prob_mean == scores.face_prob_max
    assert face_drop(scores, DEFAULT)


@needs_model
def test_no_animal_photo_is_dropped(animals, one_by_one):
    scores = {name: one_by_one[name] for name in animals}
    assert [name for name, s in scores.items() if face_drop(s, DEFAULT)] == []
    # Measured: not one box past the stage thresholds on any of them.
    assert {name: s.face_prob_max for name, s in scores.items() if s.face_count} == {}


@needs_model
def test_looser_stages_find_weak_boxes_on_animals_but_none_reaches_the_threshold(animals):
    loose = FaceSettings(stage_thresholds=(0.6, 0.7, 0.7))
    scores = detector(loose).score(list(animals.values()))
    boxed = [s for s in scores if s.face_count]
    assert boxed, "the looser stages should report some weak boxes (measured: 4 photos)"
    assert all(s.face_prob_max is not None and s.face_prob_max < 0.95 for s in boxed)
    assert not any(face_drop(s, loose) for s in scores)


@needs_model
def test_mean_squashed_rule_drops_the_portraits_and_keeps_the_animals(faces, animals):
    model = detector(SQUASHED)
    face_scores = model.score(list(faces.values()))
    assert [s.face_count for s in face_scores] == [1, 1]
    assert all(face_drop(s, SQUASHED) for s in face_scores)
    animal_scores = model.score(list(animals.values()))
    assert not any(face_drop(s, SQUASHED) for s in animal_scores)


@needs_model
def test_mean_squashed_scores_the_image_resized_to_a_square(faces):
    """The rule squashes to squash_px x squash_px ignoring the aspect ratio (Grace Hopper's
    portrait is 437x512), then detects on that."""
    portrait = faces["grace_hopper.jpg"]
    assert portrait.width != portrait.height
    squashed = detector(SQUASHED).score([portrait])[0]
    by_hand = portrait.resize((720, 720), Image.Resampling.BICUBIC)
    assert detector(DEFAULT).score([by_hand])[0] == squashed


# ---- batching and order ------------------------------------------------------------------------


def assert_same(got: FaceScores, want: FaceScores, name: str) -> None:
    assert got.face_count == want.face_count, name
    for field in ("face_prob_max", "face_prob_mean"):
        a, b = getattr(got, field), getattr(want, field)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a == pytest.approx(b, abs=1e-5), name


@needs_model
def test_batched_scores_equal_one_by_one(faces, animals, one_by_one):
    photos = {**faces, **animals}
    sizes = [im.size for im in photos.values()]
    assert max(sizes.count(s) for s in sizes) > 1, "some batch must hold several images"
    batched = detector(FaceSettings(batch_size=8)).score(list(photos.values()))
    for (name, want), got in zip(one_by_one.items(), batched, strict=True):
        assert_same(got, want, name)


@needs_model
def test_mixed_sizes_and_modes_keep_input_order(faces, animals, one_by_one):
    """Sizes interleaved, batches of 3 cut across them, a greyscale and an RGBA input: every
    result lands at its input's position."""
    names = [*FACES, *animals]
    random.Random(4).shuffle(names)
    photos = {**faces, **animals}
    images = [photos[n] for n in names]
    images[0] = images[0].convert("L")
    images[1] = images[1].convert("RGBA")
    scores = detector(FaceSettings(batch_size=3)).score(images)
    assert len(scores) == len(names)
    for i, (name, got) in enumerate(zip(names, scores, strict=True)):
        if i >= 2:  # the converted ones are other pixels; checked below
            assert_same(got, one_by_one[name], name)
    positions = {name: i for i, name in enumerate(names)}
    for face in FACES:
        if positions[face] >= 2:
            assert face_drop(scores[positions[face]], DEFAULT)


@needs_model
def test_empty_input_gives_empty_output():
    assert detector(DEFAULT).score([]) == []


# ---- the model, its identity and the process cache ---------------------------------------------


@needs_model
def test_identity_names_the_shipped_weights_and_is_stable_across_loads():
    import facenet_pytorch

    first, second = FaceDetector(DEFAULT).identity, FaceDetector(DEFAULT).identity
    assert first == second
    assert first["name"] == "facenet-pytorch MTCNN"
    assert first["version"] == "2.5.3"
    assert re.fullmatch(r"[0-9a-f]{64}", first["weights_sha256"])
    folder = Path(facenet_pytorch.__file__).parent / "data"
    concatenated = b"".join((folder / n).read_bytes() for n in ("onet.pt", "pnet.pt", "rnet.pt"))
    assert first["weights_sha256"] == hashlib.sha256(concatenated).hexdigest()


@needs_model
def test_process_cache_loads_a_model_once_per_model_settings():
    base = detector(DEFAULT)
    assert detector(FaceSettings()) is base
    other_rule = detector(FaceSettings(rule="mean_squashed", batch_size=2))
    assert other_rule.model is base.model and other_rule.settings.rule == "mean_squashed"
    assert base.settings == DEFAULT  # sharing the model did not change the cached detector
    other_model = detector(FaceSettings(min_face_px=40))
    assert other_model.model is not base.model
    assert other_model.model.min_face_size == 40


def test_module_import_does_not_load_torch():
    code = "import sys, stages.filter.faces; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ---- the decision from stored scores -----------------------------------------------------------


def scores(*probs: float) -> FaceScores:
    return FaceScores.from_probs(list(probs))


def test_from_probs_counts_max_and_mean():
    assert scores() == FaceScores(0, None, None)
    s = scores(0.99, 0.97)
    assert (s.face_count, s.face_prob_max, s.face_prob_mean) == (2, 0.99, pytest.approx(0.98))


def test_any_box_drops_at_the_threshold_on_the_max():
    assert not face_drop(scores(), DEFAULT)
    assert face_drop(scores(0.985), DEFAULT)  # >=: the threshold itself drops
    assert not face_drop(scores(0.98499), DEFAULT)
    assert face_drop(scores(0.5, 0.999), DEFAULT)  # one clear face among weak boxes is enough


def test_mean_squashed_drops_above_the_threshold_on_the_mean():
    assert not face_drop(scores(), SQUASHED)
    assert not face_drop(scores(0.985), SQUASHED)  # >: the threshold itself is kept
    assert face_drop(scores(0.98501), SQUASHED)
    assert not face_drop(scores(0.5, 0.999), SQUASHED)  # the weak box pulls the mean down


def test_rethreshold_from_stored_scores_needs_no_model():
    stored = FaceScores(face_count=1, face_prob_max=0.95, face_prob_mean=0.95)
    assert not face_drop(stored, DEFAULT)
    assert face_drop(stored, FaceSettings(face_threshold=0.9))
    assert face_drop(stored, FaceSettings(face_threshold=0.9, rule="mean_squashed"))


@pytest.mark.parametrize(
    "kwargs",
    [{"rule": "median"}, {"face_threshold": 1.5}, {"stage_thresholds": (0.9, 0.95)},
     {"batch_size": 0}, {"min_face_px": 0}, {"squash_px": 0}],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        FaceSettings(**kwargs)
