"""Taxa of an evaluation set and their class texts.

A taxon at rank r is the lineage prefix kingdom..r (a tuple), so homonyms in different parents
stay apart. Its name follows stage 06's caption rules (stages/shard/captions.py): missing ranks
are left out and the species is written as its epithet after its genus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from training.metrics.types import RANKS

Taxon = tuple[str, ...]
NAME_KINDS = ("taxonomic", "scientific", "tagged")


def _species_term(species: str, genus: str) -> str:
    """The species as it reads in a lineage: its epithet when its first word is the genus."""
    words = species.split(" ")
    if genus and len(words) > 1 and words[0].casefold() == genus.casefold():
        return " ".join(words[1:])
    return species


def _binomial(species: str, genus: str) -> str:
    return f"{genus} {species}" if genus and " " not in species else species


def taxon_name(taxon: Taxon, kind: str) -> str:
    """The name of a taxon (a lineage prefix) in class texts; see NAME_KINDS."""
    genus = taxon[5] if len(taxon) > 6 else ""
    terms = []
    for rank, value in zip(RANKS, taxon, strict=False):
        if value:
            terms.append((rank, _species_term(value, genus) if rank == "species" else value))
    if not terms:
        raise ValueError(f"taxon {taxon!r} has no named rank")
    if kind == "taxonomic":
        return " ".join(term for _, term in terms)
    if kind == "tagged":
        return " ".join(f"{rank} {term}" for rank, term in terms)
    if kind == "scientific":
        return _binomial(taxon[6], genus) if len(taxon) > 6 and taxon[6] else terms[-1][1]
    raise ValueError(f"unknown name kind {kind!r} (one of {', '.join(NAME_KINDS)})")


def taxa_at(lineages: Sequence[Taxon], depth: int) -> tuple[list[Taxon], np.ndarray]:
    """(sorted taxa with `depth` ranks, per image the index of its taxon or -1 where the rank at
    depth is unknown)."""
    keys = [tuple(lineage[:depth]) if lineage[depth - 1] else None for lineage in lineages]
    taxa = sorted({key for key in keys if key is not None})
    where = {taxon: i for i, taxon in enumerate(taxa)}
    labels = np.array([where[key] if key is not None else -1 for key in keys], dtype=np.int64)
    return taxa, labels


def class_text_embeddings(
    encode_text: Callable[[list[str]], np.ndarray] | None, taxa: Sequence[Taxon], templates: Sequence[str],
    name_kind: str, batch_size: int,
) -> np.ndarray:  # fmt: skip
    """(len(taxa), d): per taxon, the mean of its template texts' embeddings, L2-normalised."""
    if encode_text is None:
        raise ValueError("these metrics need a text encoder (EvalInputs.encode_text is None)")
    if not templates:
        raise ValueError("no caption templates: set templates to at least one, e.g. 'a photo of {name}.'")
    names = [taxon_name(taxon, name_kind) for taxon in taxa]
    total: np.ndarray | None = None
    for template in templates:
        texts = [template.format(name=name) for name in names]
        parts = [np.asarray(encode_text(texts[i : i + batch_size]), dtype=np.float64)
                 for i in range(0, len(texts), batch_size)]  # fmt: skip
        embedded = np.concatenate(parts)
        total = embedded if total is None else total + embedded
    assert total is not None
    return normalise(total / len(templates)).astype(np.float32)


def normalise(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1, norms)
