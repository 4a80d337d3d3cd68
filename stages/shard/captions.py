"""Caption rules: a row's taxonomy (03's seven ranks, scientific and common name) -> the names and
the ten caption files of BioCLIP's trainer.

- Values are NFC-normalised, runs of whitespace become one space, and a value that is empty or
  one of `shard.missing_values` (any case) is missing: it is left out, never written as "None".
- The species rank holds the binomial ("Bison bison"). In the lineage it is written as its
  epithet when its first word is the genus ("... Bovidae Bison bison", never "Bison Bison bison",
  also for tautonyms), as the whole binomial when the genus is missing or differs; a one-word
  species value is an epithet and is joined to the genus for the scientific name, unless it is
  the genus itself ("Bison" as species of Bison: no species, never "Bison Bison").
- scientific name: the binomial; else 03's scientific name (the resolved taxon, e.g. a genus);
  else the most specific rank present.
- taxonomic name: the present ranks, kingdom first ("Animalia Chordata Mammalia Artiodactyla
  Bovidae Bison bison"); tagged: each preceded by its rank ("kingdom Animalia ... species bison");
  both are the scientific name when no rank is present.
- common name: 03's common name; when missing the scientific name, then the taxonomic name.
- A row with no rank and no scientific name has no taxon: no captions (the stage drops it).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
# The "a photo of ..." captions, by file kind (the member is `<uuid>.<kind>.txt`).
CAPTION_KINDS = ("sci", "com", "taxon", "sci_com", "taxon_com", "taxonTag", "taxonTag_com")
# The bare names, by file kind.
NAME_KINDS = ("scientific_name", "taxonomic_name", "common_name")
TEXT_KINDS = CAPTION_KINDS + NAME_KINDS


@dataclass(frozen=True)
class Names:
    scientific: str
    taxonomic: str
    tagged: str
    common: str  # after the fallbacks


def clean(value: str | None, missing: frozenset[str]) -> str | None:
    """NFC, single spaces, trimmed; None when empty or a missing-value token."""
    if value is None:
        return None
    text = " ".join(unicodedata.normalize("NFC", str(value)).split())
    return None if text.casefold() in missing or not text else text


def species_parts(species: str, genus: str | None) -> tuple[str, str]:
    """(scientific binomial, the species' term in the lineage) of a cleaned species value."""
    words = species.split(" ")
    if len(words) == 1:  # a bare epithet
        return (f"{genus} {species}" if genus else species), species
    if genus and words[0].casefold() == genus.casefold():
        return species, " ".join(words[1:])
    return species, species


def lineage(ranks: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """(rank, term) for each present rank, kingdom first; the species as its epithet."""
    terms = []
    for rank in RANKS:
        value = ranks.get(rank)
        if value is None:
            continue
        term = species_parts(value, ranks.get("genus"))[1] if rank == "species" else value
        terms.append((rank, term))
    return terms


def names_of(
    ranks: Mapping[str, str | None], scientific_name: str | None, common_name: str | None,
    missing: frozenset[str],
) -> Names | None:  # fmt: skip
    """The names of a row (raw 03 values); None when it has no taxon."""
    cleaned = {rank: clean(ranks.get(rank), missing) for rank in RANKS}
    genus, species = cleaned["genus"], cleaned["species"]
    if species is not None and species == genus:
        cleaned["species"] = None  # the genus given again as species (an epithet is lower case)
    terms = lineage(cleaned)
    if cleaned["species"] is not None:
        scientific = species_parts(cleaned["species"], genus)[0]
    else:
        scientific = clean(scientific_name, missing) or (terms[-1][1] if terms else None)
    if scientific is None:
        return None
    taxonomic = " ".join(term for _, term in terms) or scientific
    tagged = " ".join(f"{rank} {term}" for rank, term in terms) or scientific
    common = clean(common_name, missing) or scientific or taxonomic
    return Names(scientific, taxonomic, tagged, common)


def caption_texts(names: Names) -> dict[str, str]:
    """Text by file kind: the seven "a photo of" captions and the three bare names."""
    sci, taxon, tagged, common = names.scientific, names.taxonomic, names.tagged, names.common
    return {
        "sci": f"a photo of {sci}.",
        "com": f"a photo of {common}.",
        "taxon": f"a photo of {taxon}.",
        "sci_com": f"a photo of {sci} with common name {common}.",
        "taxon_com": f"a photo of {taxon} with common name {common}.",
        "taxonTag": f"a photo of {tagged}.",
        "taxonTag_com": f"a photo of {tagged} with common name {common}.",
        "scientific_name": sci,
        "taxonomic_name": taxon,
        "common_name": common,
    }
