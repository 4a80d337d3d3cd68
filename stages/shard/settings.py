"""The [shard] section as typed settings, checked before any work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError

# Keys that change no byte of the output: how rows are grouped while staging.
TUNING_PARAMS = ("staging_rows",)
# Caption kinds the `txt` member may carry (see captions.CAPTION_FILES), or "none".
NO_TXT = "none"


@dataclass(frozen=True)
class ShardSettings:
    samples_per_shard: int
    seed: int
    val_fraction: float
    val_by: str
    resize_shortest_side: int
    resize_jpeg_quality: int
    resize_jpeg_subsampling: str
    missing_values: frozenset[str]
    txt_caption: str
    tar_mtime: int
    tar_owner: str
    tar_mode: int
    staging_rows: int

    @property
    def resizes(self) -> bool:
        return self.resize_shortest_side > 0


def _octal(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError(f'shard.tar_mode must be octal permission bits ("0444"), got {text!r}') from None
    if not 0 <= mode <= 0o7777:
        raise ConfigError(f"shard.tar_mode must be within 0000..7777, got {text!r}")
    return mode


def shard_settings(params: dict[str, Any]) -> ShardSettings:
    owner = str(params["tar_owner"])
    if not owner or len(owner.encode()) > 31 or not owner.isascii():
        raise ConfigError(f"shard.tar_owner must be 1-31 ASCII characters (tar header), got {owner!r}")
    return ShardSettings(
        samples_per_shard=int(params["samples_per_shard"]),
        seed=int(params["seed"]),
        val_fraction=float(params["val_fraction"]),
        val_by=str(params["val_by"]),
        resize_shortest_side=int(params["resize_shortest_side"]),
        resize_jpeg_quality=int(params["resize_jpeg_quality"]),
        resize_jpeg_subsampling=str(params["resize_jpeg_subsampling"]),
        missing_values=frozenset(str(v).strip().casefold() for v in params["missing_values"]),
        txt_caption=str(params["txt_caption"]),
        tar_mtime=int(params["tar_mtime"]),
        tar_owner=owner,
        tar_mode=_octal(str(params["tar_mode"])),
        staging_rows=int(params["staging_rows"]),
    )
