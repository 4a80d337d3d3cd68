"""The numbered stages. Each is a package exposing STAGE; a stage never imports another stage."""

from __future__ import annotations

import importlib

# Stage directory -> module. Order is execution order.
STAGE_MODULES: dict[str, str] = {
    "01_ingest": "stages.ingest",
    "02_download": "stages.download",
    "03_taxonomy": "stages.taxonomy",
    "04_filter": "stages.filter",
    "05_dedup": "stages.dedup",
    "06_shard": "stages.shard",
    "07_train": "stages.train",
}


def resolve_stage_dir(name: str) -> str:
    """Accept '01', 'ingest', '01_ingest' or '01-ingest' and return '01_ingest'."""
    key = name.strip().lower().replace("-", "_")
    for stage_dir in STAGE_MODULES:
        number, short = stage_dir.split("_", 1)
        if key in (stage_dir, number, short):
            return stage_dir
    known = ", ".join(STAGE_MODULES)
    from pipeline.errors import ConfigError

    raise ConfigError(f"unknown stage {name!r} (known: {known})")


def load_stage(stage_dir: str):
    """Import a stage's module and return its STAGE object."""
    from pipeline.errors import ConfigError

    module_name = STAGE_MODULES[stage_dir]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"stage {stage_dir} is not implemented in this version") from exc
        raise
    return module.STAGE


def available_stages() -> list[str]:
    """Stage dirs whose module exists in this installation."""
    import importlib.util

    return [d for d, m in STAGE_MODULES.items() if importlib.util.find_spec(m) is not None]
