"""Stage 07's settings, evaluation data layouts and clear refusals on bad input."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli
from training.evaldata import read_eval_set
from training.profiles import resolve

pytest_plugins = ["tests.support.train_fixtures"]


def test_profiles_resolve_with_overrides():
    big = resolve({"profile": "h100-bioclip2"})
    assert (big.model, big.batch_size, big.replay_batch_size, big.lr, big.warmup_steps, big.epochs) == (
        "ViT-L-14", 2816, 320, 1e-4, 1875, 30)  # fmt: skip
    assert (big.nodes, big.gpus_per_node, big.precision, big.grad_checkpointing) == (4, 8, "bf16", True)
    assert (big.beta1, big.beta2, big.eps, big.weight_decay) == (0.9, 0.98, 1e-6, 0.2)
    ablation = resolve({"profile": "ablation"})
    assert (ablation.nodes * ablation.gpus_per_node, ablation.epochs, ablation.warmup_steps) == (8, 100, 1500)
    tiny = resolve({"profile": "cpu-tiny", "lr": 3e-4, "grad_checkpointing": "on", "caption_types": ["sci"]})
    assert (tiny.lr, tiny.grad_checkpointing, tiny.caption_types) == (3e-4, True, ("sci",))
    assert resolve({"profile": "cpu-tiny", "lr": "profile"}).lr == 1e-3


def test_bad_settings_fail_at_load_with_one_line(tmp_path: Path):
    for setting, expected in [("train.lr=-1", "train.lr must be > 0"),
                              ("train.profile=huge", "train.profile must be one of"),
                              ("train.executor=cloud", "train.executor must be one of")]:  # fmt: skip
        result = cli(tmp_path, "--set", setting, "config", check=False)
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_run_train_refuses_missing_shards(tmp_path: Path):
    result = cli(tmp_path, "run", "train", "--set", f"train.data={tmp_path / 'nowhere'}", "--set",
                 "train.executor=local", check=False)  # fmt: skip
    assert result.returncode == 2
    assert "no shard-*.tar files" in result.stderr and "tolpipe run shard" in result.stderr


def test_eval_refuses_missing_checkpoint_and_unknown_family(tmp_path: Path, synth_data: Path):
    result = cli(tmp_path, "eval", "--checkpoint", str(tmp_path / "none.pt"), "--data",
                 str(synth_data / "eval" / "eval.parquet"), check=False)  # fmt: skip
    assert result.returncode == 2 and "no such checkpoint" in result.stderr
    result = cli(tmp_path, "eval", "--checkpoint", str(tmp_path), "--data", str(tmp_path),
                 "--metrics", "core,magic", check=False)  # fmt: skip
    assert result.returncode == 2 and "unknown magic" in result.stderr


def test_eval_data_layouts(synth_data: Path, tmp_path: Path):
    parquet = read_eval_set(synth_data / "eval" / "eval.parquet")
    assert len(parquet.images) == len(parquet.lineages) == len(parquet.columns) == 400
    assert set(parquet.columns["variant"]) == {"small", "large"}
    assert all(len(x) == 7 for x in parquet.lineages)
    shards = read_eval_set(str(synth_data / "shards" / "shard-00000.tar"))
    sizes = json.loads((synth_data / "shards" / "sizes.json").read_text())
    assert len(shards.images) == sizes["shard-00000.tar"] and "variant" in shards.columns
    assert all(lineage[0] and lineage[6] for lineage in shards.lineages)
    folder = tmp_path / "folder"
    for i, image in enumerate(parquet.images[:4]):
        label = parquet.lineages[i][6].replace(" ", "_")
        (folder / label).mkdir(parents=True, exist_ok=True)
        image.save(folder / label / f"{i}.jpg")
    images = read_eval_set(folder)
    assert len(images.images) == 4 and images.lineages[0][6] == parquet.lineages[0][6]
    assert images.lineages[0][:6] == ("",) * 6  # no taxa.csv: the species only


def test_local_executor_trains_then_evaluates(synth_data: Path, tmp_path: Path):
    """Without Slurm: both jobs as local processes, the evaluation after the training."""
    import pyarrow.parquet as pq

    sets = [f"train.data={synth_data / 'shards'}", f"train.replay_data={synth_data / 'replay'}",
            f"train.eval_data={synth_data / 'eval' / 'eval.parquet'}", "train.executor=local",
            "train.max_steps=2", "train.batch_size=8", "train.replay_batch_size=2"]  # fmt: skip
    result = cli(tmp_path, "run", "train", *[arg for s in sets for arg in ("--set", s)])
    rows = {r["kind"]: r for r in pq.read_table(tmp_path / "manifests" / "07_train" / "part-00000.parquet")
            .to_pylist()}  # fmt: skip
    states = [(r["status"], r["state"], r["executor"]) for r in rows.values()]
    assert states == [("ok", "COMPLETED", "local")] * 2
    assert rows["train"]["checkpoint"].endswith("step-00000002.pt")
    assert json.loads(Path(rows["eval"]["results"]).read_text())["step"] == 2
    assert "run folder:" in result.stdout
    again = cli(tmp_path, "run", "train", *[arg for s in sets for arg in ("--set", s)])
    assert "0 computed, 1 already done" in again.stdout  # nothing submitted again
