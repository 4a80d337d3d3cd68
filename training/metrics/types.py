"""What every metric family reads: frozen embeddings of one evaluation set and a text encoder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


@dataclass
class EvalInputs:
    """One evaluation set, embedded once and shared by all metric families.

    `lineages[i]` holds the 7 rank names (kingdom..species) of image i, "" where unknown; the
    species entry is the epithet or binomial exactly as training captions spell it. `columns` holds
    the other per-image columns (e.g. `variant`, trait or binary task labels), row-aligned with the
    embeddings. `encode_text` maps texts to L2-normalised rows of the same space.
    """

    image_embeddings: np.ndarray  # (n, d) float32, L2-normalised, main projection
    lineages: list[tuple[str, ...]]  # per image: 7 names kingdom..species; "" where unknown
    columns: pd.DataFrame = field(default_factory=pd.DataFrame)  # other per-image columns, row-aligned
    encode_text: Callable[[list[str]], np.ndarray] | None = None  # texts -> (m, d) float32 L2-normalised
    seed: int = 0

    def __post_init__(self) -> None:
        n = len(self.image_embeddings)
        if len(self.lineages) != n:
            raise ValueError(f"EvalInputs: {len(self.lineages)} lineages for {n} embeddings")
        if len(self.columns) not in (0, n):
            raise ValueError(f"EvalInputs: {len(self.columns)} column rows for {n} embeddings")
        for lineage in self.lineages:
            if len(lineage) != len(RANKS):
                raise ValueError(f"EvalInputs: lineage {lineage!r} has {len(lineage)} ranks, expected 7")
