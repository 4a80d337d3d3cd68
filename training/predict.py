"""`tolpipe predict`: open-ended Tree-of-Life classification of image files with a trained
checkpoint, in the manner of pybioclip's TreeOfLifeClassifier.

    tolpipe predict --checkpoint CKPT [--taxonomy FILE] [--rank RANK] [-k K] [--json]
                    [--device cpu|cuda] [--batch-size N] IMAGE...

Every candidate species gets a class text (the caption templates of the [core] metrics,
training/metrics/defaults.toml, averaged and normalised); an image's probabilities are the
softmax over all species of the model's logit scale times the cosine similarities. At a higher
rank (--rank genus, say) a taxon's probability is the sum over the species under it.

Candidates: the species of a taxonomy file (--taxonomy: CSV or Parquet with the columns kingdom,
phylum, class, order, family, genus, species; the species column holds the binomial or the
epithet; other columns are ignored; rows without a species are dropped), else the taxa the
checkpoint was trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, TolpipeError
from training.metrics.types import RANKS

DEFAULT_K = 5
DEFAULT_BATCH = 64  # images embedded per forward pass
DESCRIPTION = """\
Predict the taxon of each image with a trained checkpoint: the top-k species with their
seven-rank lineage and probability, or the top-k taxa of one rank (the summed probability of the
species under each). Candidates are the species of --taxonomy (a CSV or Parquet file with the
columns kingdom, phylum, class, order, family, genus, species) or, by default, those the
checkpoint was trained on. Class texts are the [core] caption templates of
training/metrics/defaults.toml, averaged."""
EPILOG = """\
examples:
  tolpipe predict --checkpoint train/run-1 photos/*.jpg
  tolpipe predict --checkpoint ckpt.pt --taxonomy taxa.parquet --rank genus -k 3 --json bird.jpg"""


def add_parser(
    subparsers: Any, global_options: Callable[[argparse.ArgumentParser, bool], None]
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("predict", help="predict the taxa of image files with a checkpoint",
                                   description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    global_options(parser, True)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="a checkpoint file, or a run folder (its latest checkpoint)")  # fmt: skip
    parser.add_argument("--taxonomy", type=Path, metavar="FILE",
                        help="candidate species: CSV or Parquet with the 7 rank columns "
                        "(default: the checkpoint's training taxa)")  # fmt: skip
    parser.add_argument("--rank", choices=RANKS, default="species",
                        help="rank of the predictions (default: species)")  # fmt: skip
    parser.add_argument(
        "-k", type=int, default=DEFAULT_K, help=f"predictions per image (default {DEFAULT_K})"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                        help=f"images per forward pass (default {DEFAULT_BATCH})")  # fmt: skip
    return parser


@dataclass(frozen=True)
class Prediction:
    rank: str
    lineage: tuple[str, ...]  # kingdom..rank
    probability: float

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "name": self.lineage[-1], "probability": self.probability,
                "lineage": dict(zip(RANKS, self.lineage, strict=False))}  # fmt: skip


def read_taxonomy(path: Path) -> list[tuple[str, ...]]:
    """The distinct 7-rank lineages with a species of a CSV or Parquet file, sorted."""
    import pandas as pd

    if not path.is_file():
        raise ConfigError(f"--taxonomy {path}: no such file")
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() in {".parquet", ".pq"} else pd.read_csv(
            path, dtype=str, keep_default_na=False)  # fmt: skip
    except Exception as exc:
        raise ConfigError(f"--taxonomy {path}: not a readable CSV or Parquet file ({exc})") from exc
    missing = [rank for rank in RANKS if rank not in frame.columns]
    if missing:
        raise ConfigError(f"--taxonomy {path}: missing column(s) {', '.join(missing)}; "
                          f"expected {', '.join(RANKS)}")  # fmt: skip
    values = frame[list(RANKS)].fillna("").astype(str).map(lambda v: " ".join(v.split()))
    lineages = {tuple(row) for row in values.itertuples(index=False, name=None) if row[-1]}
    if not lineages:
        raise ConfigError(f"--taxonomy {path}: no row with a species")
    return sorted({_full_binomial(lineage) for lineage in lineages})


def _full_binomial(lineage: tuple[str, ...]) -> tuple[str, ...]:
    """A one-word species (an epithet) joined to its genus, as the training captions do."""
    genus, species = lineage[5], lineage[6]
    if genus and " " not in species and species != genus:
        return (*lineage[:6], f"{genus} {species}")
    return lineage


def rank_probabilities(probabilities: np.ndarray, species: Sequence[tuple[str, ...]], rank: str
                       ) -> tuple[list[tuple[str, ...]], np.ndarray]:  # fmt: skip
    """Per image, the summed probability of the species under each taxon of `rank`."""
    depth = RANKS.index(rank) + 1
    taxa = sorted({lineage[:depth] for lineage in species})
    where = {taxon: i for i, taxon in enumerate(taxa)}
    group = np.array([where[lineage[:depth]] for lineage in species])
    summed = np.stack([np.bincount(group, weights=row, minlength=len(taxa)) for row in probabilities])
    return taxa, summed


def top_k(
    probabilities: np.ndarray, taxa: Sequence[tuple[str, ...]], rank: str, k: int
) -> list[list[Prediction]]:
    """The k most probable taxa per image, most probable first (ties: the taxon sorted first; `taxa`
    are sorted)."""
    out = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([Prediction(rank, taxa[i], float(row[i])) for i in order])
    return out


def _open_images(paths: Sequence[Path]) -> list[Any]:
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path}: no such image file")
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise TolpipeError(f"{path}: not a readable image ({exc})") from exc
    return images


def predict(checkpoint: Path, images: Sequence[Path], taxonomy: Path | None = None, rank: str = "species",
            k: int = DEFAULT_K, device: str = "cpu", batch_size: int = DEFAULT_BATCH,
            progress: Callable[[str], None] | None = None) -> list[list[Prediction]]:  # fmt: skip
    """The top-k predictions of each image (see the module's docstring)."""
    from training.checkpoint import load_for_inference
    from training.embed import encode_images, encode_texts
    from training.metrics.params import default_params
    from training.metrics.taxa import class_text_embeddings

    say = progress or (lambda _: None)
    if k < 1:
        raise ConfigError(f"-k must be >= 1, got {k}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    _check_device(device)
    pictures = _open_images(images)
    loaded = load_for_inference(checkpoint, device=device)
    species = read_taxonomy(taxonomy) if taxonomy else sorted({_full_binomial(tuple(t)) for t in loaded.taxa
                                                               if len(t) == 7 and t[-1]})  # fmt: skip
    if not species:
        raise ConfigError(f"{checkpoint}: the checkpoint records no training taxa; give --taxonomy FILE")
    say(f"{len(species)} candidate species from {taxonomy or 'the checkpoint'}; encoding their class texts")
    core = default_params("core")

    def encode(texts: list[str]) -> np.ndarray:
        return encode_texts(loaded.model, loaded.tokenizer, texts, core["text_batch_size"], device)

    texts = class_text_embeddings(
        encode, species, core["templates"], core["name_kind"], core["text_batch_size"]
    )
    say(f"embedding {len(pictures)} image(s) in batches of {batch_size} on {device}")
    embeddings = encode_images(loaded.model, loaded.preprocess, pictures, batch_size, device)
    scale = float(loaded.model.logit_scale.exp().item())
    predictions: list[list[Prediction]] = []
    for start in range(0, len(embeddings), batch_size):  # an (images x species) matrix a batch at a time
        probabilities = softmax(scale * embeddings[start : start + batch_size].astype(np.float64) @ texts.T)
        if rank == "species":
            predictions += top_k(probabilities, species, rank, k)
        else:
            taxa, summed = rank_probabilities(probabilities, species, rank)
            predictions += top_k(summed, taxa, rank, k)
    return predictions


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by each row's maximum for stability."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu")


def _display_name(lineage: tuple[str, ...]) -> str:
    return lineage[-1] or "(unnamed)"


def _above(lineage: tuple[str, ...]) -> str:
    """The ranks above a taxon, kingdom first ("?" where unknown)."""
    return " > ".join(value or "?" for value in lineage[:-1])


def format_table(paths: Sequence[Path], predictions: Sequence[Sequence[Prediction]]) -> str:
    """One ranked table per image: position, probability, taxon, lineage above it."""
    from training.metrics.report import table

    blocks = []
    for path, ranked in zip(paths, predictions, strict=True):
        rows = [[i, f"{p.probability:.4f}", _display_name(p.lineage), _above(p.lineage)]
                for i, p in enumerate(ranked, start=1)]  # fmt: skip
        blocks.append(table(["#", "probability", ranked[0].rank, "lineage"], rows, str(path)))
    return "\n\n".join(blocks)


def run_command(args: argparse.Namespace, config: dict[str, Any]) -> int:
    del config  # predict reads its settings from the checkpoint and the metrics defaults
    paths = [Path(p) for p in args.images]

    def progress(message: str) -> None:
        print(f"predict: {message}", file=sys.stderr, flush=True)

    predictions = predict(args.checkpoint, paths, args.taxonomy, args.rank, args.k, args.device,
                          args.batch_size, progress)  # fmt: skip
    if args.json:
        document = [{"image": str(path), "predictions": [p.as_dict() for p in ranked]}
                    for path, ranked in zip(paths, predictions, strict=True)]  # fmt: skip
        print(json.dumps(document, indent=2))
    else:
        print(format_table(paths, predictions))
        progress(f"{len(paths)} image(s), top {args.k} at rank {args.rank}")
    return 0
