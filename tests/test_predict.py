"""`tolpipe predict` with a real cpu-tiny checkpoint (trained for two steps on synthetic data by
the project's own trainer) on the shipped photos: ranked tables with lineages, JSON, ranks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import ConfigError, TolpipeError
from tests.support.photo_corpus import corpus_dir
from training.predict import predict, rank_probabilities, read_taxonomy

PHOTOS = ["alces_alces.jpg", "ara_macao.jpg", "ailurus_fulgens.jpg"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.loop import train
    from training.profiles import resolve
    from training.synth import synthesize

    out = tmp_path_factory.mktemp("tiny")
    synthesize(out, species=4, images_per_species=4, eval_per_species=2, replay=0, seed=0)
    overrides = {"profile": "cpu-tiny", "max_steps": 2, "batch_size": 8, "checkpoint_every": 2}
    train(resolve(overrides, data=str(out / "shards"), replay_data=""), out / "run")
    return out / "run"


def photos() -> list[str]:
    return [str(corpus_dir() / name) for name in PHOTOS]


def test_table_ranks_the_checkpoint_species_with_lineages(checkpoint: Path, capsys: pytest.CaptureFixture):
    assert main(["predict", "--checkpoint", str(checkpoint), "-k", "3", *photos()]) == 0
    out, err = capsys.readouterr()
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 3
    for block, name in zip(blocks, PHOTOS, strict=True):
        lines = block.splitlines()
        assert lines[0].endswith(name)
        assert lines[1].split()[:3] == ["#", "probability", "species"]
        ranked = lines[3:]
        assert [line.split()[0] for line in ranked] == ["1", "2", "3"]
        probabilities = [float(line.split()[1]) for line in ranked]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
        assert all(line.count(" > ") == 5 for line in ranked)  # kingdom > ... > genus
    from training.checkpoint import latest, load

    seen = {tuple(t) for t in load(latest(checkpoint))["taxa"]}
    assert f"{len(seen)} candidate species from the checkpoint" in err
    rows = [line for block in blocks for line in block.splitlines()[3:]]
    assert all(any(f"  {t[-1]}  " in line for t in seen) for line in rows)  # each row names a seen species


def test_json_at_a_rank_sums_its_species(checkpoint: Path, capsys: pytest.CaptureFixture):
    taxonomy = corpus_dir() / "CREDITS.csv"
    args = ["predict", "--checkpoint", str(checkpoint), "--taxonomy", str(taxonomy), "--json"]
    assert main([*args, "--rank", "class", "-k", "100", *photos()[:1]]) == 0
    by_class = json.loads(capsys.readouterr().out)
    assert main([*args, "-k", "1000", *photos()[:1]]) == 0
    by_species = json.loads(capsys.readouterr().out)
    species = by_species[0]["predictions"]
    assert len(species) == len(read_taxonomy(taxonomy))
    assert sum(p["probability"] for p in species) == pytest.approx(1.0)
    assert set(species[0]["lineage"]) == {"kingdom", "phylum", "class", "order", "family", "genus", "species"}
    for entry in by_class[0]["predictions"]:
        assert entry["rank"] == "class" and list(entry["lineage"])[-1] == "class"
        under = [p["probability"] for p in species if p["lineage"]["class"] == entry["name"]
                 and p["lineage"]["phylum"] == entry["lineage"]["phylum"]]  # fmt: skip
        assert entry["probability"] == pytest.approx(sum(under))


def test_rank_probabilities_by_hand():
    species = [("A", "p", "c", "o", "f", "g1", "g1 x"), ("A", "p", "c", "o", "f", "g1", "g1 y"),
               ("A", "p", "c", "o", "f", "g2", "g2 z")]  # fmt: skip
    taxa, summed = rank_probabilities(np.array([[0.2, 0.3, 0.5]]), species, "genus")
    assert [t[-1] for t in taxa] == ["g1", "g2"] and summed.tolist() == [[0.5, 0.5]]


def test_bad_input_fails_clearly(checkpoint: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="no such image file"):
        predict(checkpoint, [tmp_path / "missing.jpg"])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(TolpipeError, match="not a readable image"):
        predict(checkpoint, [text])
    table = tmp_path / "taxa.csv"
    table.write_text("kingdom,genus,species\nAnimalia,Bison,bison\n")
    with pytest.raises(ConfigError, match="missing column"):
        predict(checkpoint, [Path(photos()[0])], taxonomy=table)
    with pytest.raises(ConfigError, match="-k must be >= 1"):
        predict(checkpoint, [Path(photos()[0])], k=0)
    with pytest.raises(TolpipeError, match="no checkpoint"):
        predict(tmp_path, [Path(photos()[0])])


def test_cuda_without_a_device_says_so(checkpoint: Path):
    import torch

    if torch.cuda.is_available():
        on_gpu = predict(checkpoint, [Path(photos()[0])], k=2, device="cuda")[0]
        on_cpu = predict(checkpoint, [Path(photos()[0])], k=2)[0]
        assert [p.lineage for p in on_gpu] == [p.lineage for p in on_cpu]
        assert [p.probability for p in on_gpu] == pytest.approx([p.probability for p in on_cpu], abs=1e-3)
    else:
        with pytest.raises(ConfigError, match="no CUDA device"):
            predict(checkpoint, [Path(photos()[0])], device="cuda")
