from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import cli


@pytest.mark.parametrize(
    "command",
    [[], ["run"], ["retry"], ["status"], ["audit"], ["config"], ["show"], ["rethreshold"], ["testsets"],
     ["filter"], ["filter", "build-support-set"]],
)
def test_help_on_every_command(tmp_path: Path, command: list[str]):
    result = cli(tmp_path, *command, "--help")
    assert result.returncode == 0 and "usage: tolpipe" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "nosuchstage"], "unknown stage 'nosuchstage'"),
        (["--set", "ingest.batch_size=big", "run", "ingest"], "ingest.batch_size must be int"),
        (["--set", "nope.key=1", "status"], "unknown section [nope]"),
        (["--config", "/nonexistent.toml", "status"], "config file not found"),
        (["run", "ingest"], "no ingest sources"),
        (["retry", "ingest", "--reason", "timeout"], "nothing to retry"),
    ],
)
def test_bad_usage_is_one_line_and_non_zero(tmp_path: Path, args: list[str], message: str):
    result = cli(tmp_path, *args, check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_status_on_an_empty_root_says_what_to_do(tmp_path: Path):
    assert "run `tolpipe run ingest` first" in cli(tmp_path, "status").stdout


def test_config_defaults_lists_every_section(tmp_path: Path):
    text = cli(tmp_path, "config", "--defaults").stdout
    for section in ("[run]", "[cluster]", "[ingest]", "[download]", "[taxonomy]"):
        assert section in text
