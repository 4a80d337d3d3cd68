"""Ranges and choices of settings, documented in the defaults files and checked at config load."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.config import freeze, load_config, load_defaults
from pipeline.errors import ConfigError
from tests.conftest import cli


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric_settings() -> list[tuple[str, str]]:
    """(section, key) of every number or array of numbers of the merged defaults."""
    found = []
    for section, values in load_defaults().items():
        for key, value in values.items():
            if _numeric(value) or (isinstance(value, list) and value and all(map(_numeric, value))):
                found.append((section, key))
    return found


def test_every_numeric_setting_has_a_range():
    from pipeline.constraints import constraints

    known = constraints()
    missing = [f"{s}.{k}" for s, k in _numeric_settings() if (s, k) not in known]
    assert len(_numeric_settings()) > 40
    assert not missing, f"no '# range:' line above {missing}"


def test_every_default_satisfies_its_own_constraint():
    from pipeline.constraints import constraints, problem

    defaults = load_defaults()
    assert constraints(), "no constraint parsed"
    for section, key in constraints():
        assert key in defaults[section], f"constraint for unknown setting {section}.{key}"
        assert problem(section, key, defaults[section][key]) is None, (section, key)


def test_documented_choices_match_the_code():
    from pipeline.constraints import constraints
    from pipeline.executors import CLUSTER_KINDS
    from stages.download.settings import RATE_KEYS, SUBSAMPLING
    from stages.taxonomy.factory import RESOLVERS
    from stages.taxonomy.names import INPUT_FIELDS, PARSERS, RANKS
    from stages.taxonomy.profiles import RULES

    expected = {
        ("cluster", "kind"): CLUSTER_KINDS,
        ("download", "jpeg_subsampling"): tuple(SUBSAMPLING),
        ("download", "allowed_schemes"): ("http", "https"),
        ("taxonomy", "resolver"): RESOLVERS,
        ("taxonomy", "name_parser"): PARSERS,
        ("taxonomy", "common_name_climb_to"): RANKS,
        ("taxonomy", "query_order"): INPUT_FIELDS,
        ("taxonomy", "profiles"): tuple(RULES),
    }
    known = constraints()
    for where, choices in expected.items():
        assert set(known[where].choices) == set(choices), where
    assert known[("download", "host_overrides")].keys == RATE_KEYS


def test_parsed_constraints_of_a_few_keys():
    from pipeline.constraints import constraints

    known = constraints()
    workers = known[("cluster", "workers")]
    assert (workers.low, workers.low_open, workers.alternatives) == (1, False, ("auto",))
    jitter = known[("download", "backoff_jitter")]
    assert (jitter.low, jitter.high, jitter.high_open) == (0, 1, True)
    # A key inside a multi-line array must not confuse the parser (ingest's lists, areas).
    assert ("ingest", "area") not in known and ("ingest", "class") not in known


def test_parser_reads_multi_line_values_and_skips_arrays_of_tables(tmp_path: Path):
    from pipeline.constraints import parse_file

    path = tmp_path / "defaults.toml"
    path.write_text(
        '[s]\n# range: > 0 and <= 1\nfrac = 0.5\nnames = [\n    "a = 1", "[b]",\n]\n'
        '# one of: "x",\n# "y"\npick = "x"  # inline [comment\n'
        '# range: >= 1, or "auto"\nn = 2\n[[s.table]]\n# range: >= 1\nm = 1\n'
    )
    found = parse_file(path)
    assert set(found) == {("s", "frac"), ("s", "pick"), ("s", "n")}
    assert found[("s", "pick")].choices == ("x", "y")
    assert found[("s", "frac")].problem("s.frac", 0) == "s.frac must be > 0 and <= 1, got 0"
    assert found[("s", "n")].problem("s.n", "auto") is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("[s]\n# range: >= 1\n\nn = 1\n", "must be right above its setting"),
        ("[s]\n# range: at least 1\nn = 1\n", "cannot read range"),
        ("[s]\n# range: >= 1, or auto\nn = 1\n", "alternatives must be quoted strings"),
        ("[s]\nn = 1\n# range: >= 1\n", "names no setting"),
    ],
)
def test_parser_refuses_misplaced_or_unreadable_lines(tmp_path: Path, text: str, message: str):
    from pipeline.constraints import parse_file

    path = tmp_path / "defaults.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        parse_file(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("cluster.workers=0", '--set cluster.workers=0: cluster.workers must be >= 1 (or "auto"), got 0'),
        ("cluster.workers=-1", 'cluster.workers must be >= 1 (or "auto"), got -1'),
        ("cluster.workers=many", "cluster.workers must be int (or \"auto\"), got 'many'"),
        (
            "cluster.kind=slurmm",
            'cluster.kind must be one of "local", "slurm", "scheduler_file", got \'slurmm\'',
        ),
        ("cluster.threads_per_worker=0", "cluster.threads_per_worker must be >= 1, got 0"),
        ("cluster.jobs=0", "cluster.jobs must be >= 1, got 0"),
        ("run.progress_interval_s=0", "run.progress_interval_s must be > 0, got 0"),
        ("ingest.batch_size=0", "ingest.batch_size must be >= 1, got 0"),
        ("ingest.camera_trap_max_images=-1", "ingest.camera_trap_max_images must be >= 0, got -1"),
        ("download.jpeg_quality=0", "download.jpeg_quality must be in 1..100, got 0"),
        ("download.jpeg_subsampling='4:1:1'", "download.jpeg_subsampling must be one of"),
        ("download.backoff_jitter=1.0", "download.backoff_jitter must be >= 0 and < 1, got 1.0"),
        ("download.rate_decrease=0", "download.rate_decrease must be > 0 and <= 1, got 0"),
        ("download.retry_statuses=[429, 99]", "download.retry_statuses[1] must be in 100..599, got 99"),
        ("download.allowed_schemes=['ftp']", "download.allowed_schemes[0] must be one of"),
        ("download.rate_split_slots=-2", "download.rate_split_slots must be >= 0, got -2"),
        ("download.robots_ttl_s=100000.0", "download.robots_ttl_s must be > 0 and <= 86400"),
        ("taxonomy.resolver=gbif", 'taxonomy.resolver must be one of "backbone", "gnverifier"'),
        ("taxonomy.sources=[11, 0]", "taxonomy.sources[1] must be >= 1, got 0"),
        ("taxonomy.max_edit_distance=2", "taxonomy.max_edit_distance must be in 0..1, got 2"),
        ("taxonomy.min_lineage_agreement=7", "taxonomy.min_lineage_agreement must be in 0..6, got 7"),
        ("taxonomy.profiles=['exact_accepted', 'nope']", "taxonomy.profiles[1] must be one of"),
        (
            'download.host_overrides={"a.org" = {rate_per_host = "fast"}}',
            "download.host_overrides.\"a.org\".rate_per_host must be > 0, got 'fast'",
        ),
        (
            'download.host_overrides={"a.org" = {rate_per_host = 0.0}}',
            'download.host_overrides."a.org".rate_per_host must be > 0, got 0.0',
        ),
        (
            'download.host_overrides={"a.org" = {speed = 1.0}}',
            'download.host_overrides."a.org": unknown key speed (known: rate_per_host, burst, '
            "rate_ceiling, rate_floor)",
        ),
        ('download.host_overrides={"a.org" = 2.0}', 'download.host_overrides."a.org" must be a table'),
    ],
)
def test_bad_values_are_refused_at_load(tmp_path: Path, override: str, message: str):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, overrides=[override])
    text = str(info.value)
    assert message in text and "\n" not in text
    assert text.startswith(f"--set {override}: ")


@pytest.mark.parametrize(
    "override, value",
    [
        ("cluster.workers=auto", "auto"),
        ("cluster.workers=4", 4),
        ("download.backoff_jitter=0", 0.0),
        ("taxonomy.max_edit_distance=0", 0),
        ("download.retry_statuses=[]", []),
    ],
)
def test_good_values_pass(tmp_path: Path, override: str, value: Any):
    section, key = override.split("=")[0].split(".")
    assert load_config(tmp_path, overrides=[override])[section][key] == value


def test_auto_workers_survive_the_frozen_config(tmp_path: Path):
    freeze(tmp_path, load_config(tmp_path, overrides=["cluster.workers=auto"]))
    assert load_config(tmp_path)["cluster"]["workers"] == "auto"


def test_bad_value_in_a_config_file_or_frozen_config_names_the_file(tmp_path: Path):
    file = tmp_path / "my.toml"
    file.write_text("[cluster]\nworkers = 0\n")
    with pytest.raises(ConfigError, match=re.escape(f"{file}: cluster.workers must be >= 1")):
        load_config(tmp_path / "root", file)
    (tmp_path / "tolpipe.toml").write_text('[download]\njpeg_subsampling = "4:1:1"\n')
    with pytest.raises(ConfigError, match="tolpipe.toml: download.jpeg_subsampling must be one of"):
        load_config(tmp_path)


def test_cli_refuses_zero_workers_with_one_line(tmp_path: Path):
    result = cli(tmp_path, "--set", "cluster.workers=0", "status", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'cluster.workers must be >= 1 (or "auto"), got 0' in lines[0]


def test_auto_workers_resolve_to_the_cpu_count():
    from pipeline.executors import local_workers
    from stages.download import concurrent_slots

    assert local_workers({"workers": "auto"}) == os.cpu_count()
    assert local_workers({"workers": 3}) == 3
    cluster = load_defaults()["cluster"] | {"workers": "auto", "threads_per_worker": 2}
    ctx = SimpleNamespace(params={"rate_split_slots": 0}, config={"cluster": cluster})
    assert concurrent_slots(ctx) == 2 * (os.cpu_count() or 1)


def _settings(overrides: dict[str, Any]):
    from stages.download.settings import load_settings

    return load_settings({**load_defaults()["download"], "host_overrides": overrides})


@pytest.mark.parametrize("key", ["127.0.0.2:8902", "127.0.0.2", "127.0.0.2.", " 127.0.0.2:80 "])
def test_host_override_keys_with_or_without_port(key: str):
    settings = _settings({key: {"rate_per_host": 1.0, "rate_ceiling": 2.0}})
    limits = settings.host_rate("127.0.0.2", 1)
    assert (limits.rate, limits.ceiling) == (1.0, 2.0)


@pytest.mark.parametrize(
    "key, host",
    [("Example.ORG", "example.org"), ("Example.ORG:8080", "example.org"), ("[::1]:8080", "::1"),
     ("[::1]", "::1"), ("::1", "::1"), ("2001:DB8::1", "2001:db8::1")],
)  # fmt: skip
def test_host_override_keys_are_politeness_keys(key: str, host: str):
    assert _settings({key: {"rate_ceiling": 3.0}}).host_rate(host, 1).ceiling == 3.0


def test_host_override_keys_naming_one_host_twice_are_refused():
    with pytest.raises(ConfigError, match="download.host_overrides: 'a.org:80' and 'A.org' are both a.org"):
        _settings({"a.org:80": {"burst": 1.0}, "A.org": {"burst": 2.0}})


def test_unknown_override_host_is_a_warning_naming_known_hosts(tmp_path: Path, capsys):
    from pipeline.runner import stage_context
    from stages.download import STAGE
    from tests.support.download_fixtures import DOWNLOAD, write_ingest

    write_ingest(tmp_path, [["http://127.0.0.2:8902/a.jpg", "http://127.0.0.2:8902/b.jpg"],
                            ["http://127.0.0.3:8903/c.jpg"]])  # fmt: skip
    cfg = load_defaults()
    cfg["download"]["host_overrides"] = {
        "127.0.0.2:8902": {"rate_per_host": 1.0},
        "nosuch.example.org": {"rate_per_host": 1.0},
    }
    assert len(STAGE.plan(stage_context(tmp_path, DOWNLOAD, cfg))) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "nosuch.example.org" in lines[0] and "127.0.0.2" in lines[0] and "127.0.0.3" in lines[0]
    assert "download.host_overrides" in lines[0]
