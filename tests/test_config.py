from pathlib import Path

import pytest

from pipeline.config import defaults_text, freeze, load_config, load_defaults, parse_override
from pipeline.errors import ConfigError


def test_every_default_is_documented():
    """Each key in every defaults file has a comment line right above it (or above its block)."""
    lines = defaults_text().splitlines()
    in_array_of_tables = False
    for i, line in enumerate(lines):
        above = lines[max(0, i - 12) : i]
        if line.startswith("[["):  # entries of an array of tables: documented at its first header
            assert in_array_of_tables or any(a.startswith("#") for a in above), line
            in_array_of_tables = True
            continue
        if line.startswith("["):
            in_array_of_tables = False
        elif "=" in line and not line.startswith("#") and not in_array_of_tables and line[:1] != " ":
            assert any(a.startswith("#") for a in above), f"undocumented setting: {line}"


def test_set_override_parses_toml_values(tmp_path: Path):
    config = load_config(tmp_path, overrides=["cluster.workers=3", "cluster.kind=slurm"])
    assert config["cluster"]["workers"] == 3
    assert config["cluster"]["kind"] == "slurm"
    assert parse_override("run.progress=false") == {"run": {"progress": False}}


@pytest.mark.parametrize(
    "override, message",
    [
        ("cluster.nope=1", "unknown key cluster.nope"),
        ("nosection.key=1", "unknown section [nosection]"),
        ("cluster.workers=many", "cluster.workers must be int"),
        ("workers=2", "expected section.key=value"),
    ],
)
def test_bad_overrides_are_named(tmp_path: Path, override: str, message: str):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(tmp_path, overrides=[override])


def test_frozen_config_is_the_base_of_the_next_run(tmp_path: Path):
    config = load_config(tmp_path, overrides=["cluster.workers=5"])
    freeze(tmp_path, config)
    again = load_config(tmp_path)
    assert again == config
    assert again != load_defaults()


def test_config_file_layer(tmp_path: Path):
    file = tmp_path / "my.toml"
    file.write_text('[cluster]\nkind = "scheduler_file"\nscheduler_file = "/x/s.json"\n')
    config = load_config(tmp_path / "root", file)
    assert config["cluster"]["kind"] == "scheduler_file"
    file.write_text("[cluster\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(tmp_path / "root", file)
