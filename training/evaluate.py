"""`tolpipe eval`: evaluate a training checkpoint on an evaluation set.

Loads the checkpoint (main projection), reads the evaluation data (training/evaldata.py),
embeds the images and lets each requested metric family (training/metrics) embed its class
texts, then writes `results.json`, a readable `results.txt` (one table per family) and the embedding plot
`embeddings.png` (training/plots.py; skipped with a note for fewer than 3 species).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.errors import ConfigError

DEFAULT_METRICS = "core"


def evaluate(checkpoint: Path, data: str, metrics: list[str], out_dir: Path, device: str = "cpu",
             batch_size: int = 128, seed: int = 0,
             params: dict[str, dict] | None = None, plot: bool = True) -> dict[str, Any]:  # fmt: skip
    from training.checkpoint import load_for_inference
    from training.embed import encode_images, encode_texts
    from training.evaldata import read_eval_set
    from training.metrics import FAMILIES, EvalInputs

    unknown = [m for m in metrics if m not in FAMILIES]
    if unknown:
        raise ConfigError(f"--metrics: unknown {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
    started = time.monotonic()
    loaded = load_for_inference(checkpoint, device)
    evalset = read_eval_set(data)
    print(
        f"eval: {len(evalset.images)} images from {data}; checkpoint step {loaded.meta['step']}", flush=True
    )
    embeddings = encode_images(loaded.model, loaded.preprocess, evalset.images, batch_size, device)

    def encode_text(texts: list[str]):
        return encode_texts(loaded.model, loaded.tokenizer, texts, batch_size, device)

    inputs = EvalInputs(embeddings, evalset.lineages, evalset.columns, encode_text, seed)
    results: dict[str, Any] = {
        "checkpoint": loaded.meta["path"], "step": loaded.meta["step"], "profile": loaded.meta["profile"],
        "data": str(data), "images": len(evalset.images), "families": {},
    }  # fmt: skip
    tables = []
    for name in metrics:
        family = FAMILIES[name]
        results["families"][name] = family.run(inputs, (params or {}).get(name))
        tables.append(family.format_table(results["families"][name]))
    out_dir.mkdir(parents=True, exist_ok=True)
    if plot:
        from training.plots import plot_embeddings

        results["embedding_plot"] = plot_embeddings(inputs, out_dir / "embeddings.png")
    results["elapsed_s"] = round(time.monotonic() - started, 2)
    atomic.write_text(out_dir / "results.json", json.dumps(results, indent=1, default=float) + "\n")
    text = "\n\n".join(tables) + "\n"
    atomic.write_text(out_dir / "results.txt", text)
    print(text, flush=True)
    return results


def default_out_dir(checkpoint: Path) -> Path:
    """<run>/eval beside the checkpoints folder (or beside the file given)."""
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.parent.parent if checkpoint.is_file() else checkpoint
    return run_dir / "eval"


def add_parser(subparsers: Any, global_options: Any) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a training checkpoint (zero-shot, few-shot, ... metric families)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    global_options(parser, True)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a checkpoint file, or a run folder (its latest checkpoint)")  # fmt: skip
    parser.add_argument("--data", required=True,
                        help="evaluation set: Parquet with taxonomy columns, WebDataset shards, "
                        "or an image folder")  # fmt: skip
    parser.add_argument("--metrics", default=DEFAULT_METRICS,
                        help="comma-separated metric families (default: core)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="output folder (default: <run>/eval)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the few-shot draws")
    parser.add_argument("--no-plot", dest="plot", action="store_false",
                        help="do not draw the embedding plot (embeddings.png)")  # fmt: skip


def run_command(args: argparse.Namespace, config: dict) -> int:
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    out = args.out or default_out_dir(args.checkpoint)
    evaluate(args.checkpoint, args.data, metrics, out, args.device, seed=args.seed, plot=args.plot)
    print(f"results: {out / 'results.json'} and {out / 'results.txt'}")
    return 0
