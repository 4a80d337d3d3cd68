"""Per-provider settings of the source readers, built once from the `[ingest]` section and each
source's path (stages/ingest/defaults.toml documents every key)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

MULTIPLE_CONCEPT_RULES = ("drop", "most_boxes")


@dataclass(frozen=True)
class ProviderOptions:
    eol_taxon_file: str = "taxon.tab"
    allow_unnamed: bool = False
    bioscan_images: str = "BIOSCAN_5M_original_256.zip"
    bioscan_image_type: str = "auto"
    bioscan_kingdom: str = "Animalia"
    bioscan_phylum: str = "Arthropoda"
    bioscan_class: str = "Insecta"
    bioscan_license: str = "CC BY 3.0"
    bioscan_rights_holder: str = "Centre for Biodiversity Genomics"
    fathomnet_multiple_concepts: str = "drop"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ProviderOptions:
        values = {key: params[key] for key in cls.__dataclass_fields__ if key in params}
        options = cls(**values)
        if options.fathomnet_multiple_concepts not in MULTIPLE_CONCEPT_RULES:
            raise ConfigError(
                f"ingest.fathomnet_multiple_concepts = {options.fathomnet_multiple_concepts!r}: "
                f"expected one of {', '.join(MULTIPLE_CONCEPT_RULES)}"
            )
        return options

    def eol_taxa_path(self, manifest: Path) -> Path:
        """The EOL taxon file of a media manifest: `eol_taxon_file` relative to its folder."""
        return (Path(manifest).parent / Path(self.eol_taxon_file).expanduser()).resolve()

    def bioscan_root(self, metadata: Path) -> Path:
        """The BIOSCAN-5M image archive (zip) or extracted folder of a metadata file."""
        return (Path(metadata).parent / Path(self.bioscan_images).expanduser()).resolve()


DEFAULT_OPTIONS = ProviderOptions()
