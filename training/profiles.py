"""Training profiles (training/profiles.toml) and the effective settings of one run.

A profile is a complete set of training settings (model, batch sizes, optimiser, schedule,
resources). The `[train]` config section names the profile and may override any of its keys: a
key left at "profile" (or, for lists, empty) takes the profile's value.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

PROFILES_FILE = Path(__file__).resolve().parent / "profiles.toml"
MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"
FROM_PROFILE = "profile"
# grad_checkpointing's override values (a bool setting cannot also take "profile").
SWITCHES = {"on": True, "off": False}
CAPTION_TYPES = ("sci", "com", "taxon", "sci_com", "taxon_com", "taxonTag", "taxonTag_com")


@dataclass(frozen=True)
class TrainSettings:
    """Everything the training loop needs; the profile's keys plus where the data is."""

    profile: str
    model: str
    pretrained: str
    batch_size: int
    replay_batch_size: int
    lr: float
    warmup_steps: int
    epochs: int
    max_steps: int
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    precision: str
    grad_checkpointing: bool
    caption_types: tuple[str, ...]
    checkpoint_every: int
    log_every: int
    workers: int
    seed: int
    nodes: int
    gpus_per_node: int
    cpus_per_task: int
    mem_gb: int
    time_min: int
    eval_gpus: int
    eval_cpus: int
    eval_mem_gb: int
    eval_time_min: int
    eval_batch_size: int
    data: str = ""  # shard folder (with sizes.json) or a brace-expanded URL list
    replay_data: str = ""  # image-text shards (jpg + txt); empty: no replay

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["caption_types"] = list(self.caption_types)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["caption_types"] = tuple(values["caption_types"])
        return cls(**values)


PROFILE_KEYS = tuple(
    f.name for f in fields(TrainSettings) if f.name not in ("profile", "data", "replay_data")
)


def profiles() -> dict[str, dict[str, Any]]:
    with open(PROFILES_FILE, "rb") as handle:
        return tomllib.load(handle)


def resolve(train: dict[str, Any], data: str = "", replay_data: str | None = None) -> TrainSettings:
    """The [train] section over its profile: the effective settings of a run."""
    name = train["profile"]
    table = profiles()
    if name not in table:
        raise ConfigError(f"train.profile = {name!r} is not a profile (known: {', '.join(table)})")
    values = dict(table[name])
    missing = [k for k in PROFILE_KEYS if k not in values]
    if missing:
        raise ConfigError(f"{PROFILES_FILE}: profile {name!r} lacks {', '.join(missing)}")
    for key in PROFILE_KEYS:
        override = train.get(key, FROM_PROFILE)
        if override == FROM_PROFILE or (isinstance(override, list) and not override):
            continue
        values[key] = SWITCHES.get(override, override) if key == "grad_checkpointing" else override
    unknown = [c for c in values["caption_types"] if c not in CAPTION_TYPES]
    if unknown or not values["caption_types"]:
        raise ConfigError(
            f"train.caption_types: {unknown or 'empty'}; choose from {', '.join(CAPTION_TYPES)}"
        )
    if values["epochs"] <= 0 and values["max_steps"] <= 0:
        raise ConfigError("train: set train.epochs or train.max_steps above 0")
    replay = train.get("replay_data", "") if replay_data is None else replay_data
    return TrainSettings.from_dict({**values, "profile": name, "data": data, "replay_data": replay})


def register_model_configs() -> None:
    """Make the project's own model configs (the tiny ViT) known to open_clip's factory."""
    import open_clip

    if "tolpipe-tiny-vit" not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIGS)
