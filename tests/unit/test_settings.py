"""Settings: precedence (defaults < TOML < env < flags), unknown keys, bad values,
and conf/redflow.toml documenting every setting with its default."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from redflow_mp.errors import ConfigError
from redflow_supervisor import cli
from redflow_supervisor.reference import reference_toml
from redflow_supervisor.settings import (
    SECTIONS,
    Settings,
    load,
    parse_duration,
    specs,
)

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_spec() -> None:
    s = load({}, environ={})
    assert (s.lease_ms, s.reaper_interval_ms, s.promoter_interval_ms, s.cron_lock_ttl_ms) == (
        5000,
        500,
        200,
        10000,
    )
    assert (s.graceful_timeout, s.cancel_grace, s.max_run_crashes) == (30.0, 5.0, 3)
    assert (s.max_runs_per_child, s.max_memory_per_child) == (0, 0)
    assert s.run_retention == 7 * 86400
    assert (s.restart_backoff, s.restart_backoff_max, s.max_start_failures) == (1.0, 30.0, 5)


def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    conf = tmp_path / "r.toml"
    conf.write_text('lease_ms = 7000\ncancel_grace = "2s"\nprocs = 3\nqueues = ["a", "b"]\n')
    env = {"REDFLOW_LEASE_MS": "8000", "REDFLOW_PROCS": "4"}
    s = load({"procs": "5"}, config_path=str(conf), environ=env)
    assert s.lease_ms == 8000  # env beats TOML
    assert s.procs == 5  # flag beats env
    assert s.cancel_grace == 2.0  # TOML beats default
    assert s.queues == ("a", "b")
    assert s.reaper_interval_ms == 500  # default
    s2 = load({}, environ={"REDFLOW_CONFIG": str(conf)})
    assert s2.lease_ms == 7000


def test_unknown_keys_name_key_and_source(tmp_path: Path) -> None:
    conf = tmp_path / "r.toml"
    conf.write_text("lease_msec = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'lease_msec' in config file .*r\.toml"):
        load({}, config_path=str(conf), environ={})
    with pytest.raises(ConfigError, match="unknown setting REDFLOW_LEASEMS in the environment"):
        load({}, environ={"REDFLOW_LEASEMS": "1"})


def test_bad_values_name_key_and_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lease_ms.*environment variable REDFLOW_LEASE_MS"):
        load({}, environ={"REDFLOW_LEASE_MS": "fast"})
    with pytest.raises(ConfigError, match=r"cancel_grace.*command line"):
        load({"cancel_grace": "soon"}, environ={})
    with pytest.raises(ConfigError, match="lease_ms"):
        load({"lease_ms": "-5"}, environ={})
    # a lease of a year (ms typed as us, say) would leave a gone supervisor's runs
    # untouched for that long
    with pytest.raises(ConfigError, match=r"lease_ms.*86400000"):
        load({"lease_ms": str(365 * 86_400_000)}, environ={})
    assert load({"lease_ms": "86400000"}, environ={}).lease_ms == 86_400_000
    conf = tmp_path / "bad.toml"
    conf.write_text("lease_ms = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load({}, config_path=str(conf), environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load({}, config_path=str(tmp_path / "missing.toml"), environ={})


def test_a_config_file_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    """A directory or a file that is not UTF-8 was a traceback (IsADirectoryError,
    UnicodeDecodeError; a file without read permission alike) instead of the
    one-line refusal with exit status 2."""
    with pytest.raises(ConfigError, match=r"cannot read config file .*: .*directory"):
        load({}, config_path=str(tmp_path), environ={})
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(b'app = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"config file .*latin1.toml is not valid TOML.*UTF-8"):
        load({}, config_path=str(latin), environ={})


def test_settings_are_frozen() -> None:
    s = load({}, environ={})
    with pytest.raises(AttributeError):
        s.lease_ms = 1  # type: ignore[misc]


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration(3) == 3.0
    with pytest.raises(ValueError):
        parse_duration("a while")
    with pytest.raises(ValueError):
        parse_duration(True)


def test_reference_config_documents_every_setting_with_its_default() -> None:
    data = tomllib.loads((ROOT / "conf" / "redflow.toml").read_text())
    fields = {f.name: f.default for f in msgspec.structs.fields(Settings)}
    assert set(data) == set(fields)
    for key, value in data.items():
        default = fields[key]
        if isinstance(default, tuple):
            assert tuple(value) == default, key
        else:
            assert value == default, key
    assert load({}, config_path=str(ROOT / "conf" / "redflow.toml"), environ={}) == load(
        {}, environ={}
    )


def test_cli_reports_config_errors_and_exits_2(tmp_path: Path) -> None:
    conf = tmp_path / "r.toml"
    conf.write_text("no_such_thing = 1\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "redflow_supervisor",
            "--app",
            "x",
            "--module",
            "json",
            "--config",
            str(conf),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "unknown setting 'no_such_thing'" in proc.stderr


def test_grouped_toml_tables_and_env_sections_are_accepted(tmp_path: Path) -> None:
    conf = tmp_path / "r.toml"
    conf.write_text('[supervisor]\nlease_ms = 7000\n[redis]\nprefix = "p"\n')
    s = load({}, config_path=str(conf), environ={})
    assert (s.lease_ms, s.prefix) == (7000, "p")
    s2 = load({}, environ={"REDFLOW_SUPERVISOR__LEASE_MS": "9000"})
    assert s2.lease_ms == 9000
    conf.write_text("[supervisor]\nlease_msec = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'supervisor.lease_msec'"):
        load({}, config_path=str(conf), environ={})
    conf.write_text("lease_ms = 1000\n[supervisor]\nlease_ms = 2000\n")
    with pytest.raises(ConfigError, match="given twice"):
        load({}, config_path=str(conf), environ={})


def test_committed_reference_config_is_generated_from_the_code() -> None:
    """conf/redflow.toml is reference_toml(): regenerate it with
    ``python -c "import sys; from redflow_supervisor.reference import reference_toml;
    sys.stdout.write(reference_toml())" > conf/redflow.toml``."""
    assert (ROOT / "conf" / "redflow.toml").read_text() == reference_toml()


def test_every_setting_documents_itself() -> None:
    fields = [f.name for f in msgspec.structs.fields(Settings)]
    assert [s.name for s in specs()] == fields
    for spec in specs():
        assert len(spec.description) > 20, spec.name
        assert spec.section in SECTIONS, spec.name
        assert spec.accepted(), spec.name
    by_name = {s.name: s for s in specs()}
    assert by_name["lease_ms"].unit == "ms" and by_name["lease_ms"].min == 300
    assert by_name["run_retention"].duration
    assert by_name["log_level"].choices == ("debug", "info", "warning", "error")


@pytest.mark.parametrize(
    ("overrides", "environ", "toml", "expected"),
    [
        (
            {"lease_ms": "abc"},
            {},
            "",
            "bad value 'abc' for setting lease_ms (from the command line, --lease-ms): "
            "expected a whole number of milliseconds, at least 300 "
            "and at most 86400000",
        ),
        (
            {"log_level": "verbose"},
            {},
            "",
            "bad value 'verbose' for setting log_level (from the command line, --log-level): "
            "expected one of debug, info, warning, error",
        ),
        (
            {},
            {"REDFLOW_LEASE_MS": "abc"},
            "",
            "bad value 'abc' for setting lease_ms (from environment variable "
            "REDFLOW_LEASE_MS): expected a whole number of milliseconds, at least 300 "
            "and at most 86400000",
        ),
        (
            {},
            {"REDFLOW_EMBEDDED_REDIS": "maybe"},
            "",
            "bad value 'maybe' for setting embedded_redis (from environment variable "
            "REDFLOW_EMBEDDED_REDIS): expected true or false (also 1/0, yes/no, on/off)",
        ),
        (
            # a TOML string is not taken for a boolean: the error must not offer "yes"
            {},
            {},
            'cluster = "yes"',
            "bad value 'yes' for setting cluster (from config file {path}, key cluster): "
            "expected true or false, a TOML boolean (unquoted)",
        ),
        (
            {},
            {},
            'lease_ms = "abc"',
            "bad value 'abc' for setting lease_ms (from config file {path}, key lease_ms): "
            "expected a whole number of milliseconds, at least 300 "
            "and at most 86400000",
        ),
        (
            {},
            {},
            "[logging]\nlog_level = 3",
            "bad value 3 for setting log_level (from config file {path}, key logging.log_level): "
            "expected one of debug, info, warning, error",
        ),
        (
            {"run_retention": "a week"},
            {},
            "",
            "bad value 'a week' for setting run_retention (from the command line, "
            "--run-retention): expected a duration: a number of seconds or 500ms, 30s, 5m, 2h, "
            "7d, at least 0 and at most 1000000000",
        ),
        (
            {"metrics_port": "70000"},
            {},
            "",
            "bad value '70000' for setting metrics_port (from the command line, "
            "--metrics-port): expected a whole number, at least 0 and at most 65535",
        ),
        (
            {},
            {"REDFLOW_LEASE": "5"},
            "",
            "unknown setting REDFLOW_LEASE in the environment; did you mean REDFLOW_LEASE_MS?",
        ),
        (
            {},
            {},
            "lease_msec = 1",
            "unknown setting 'lease_msec' in config file {path}; did you mean lease_ms?",
        ),
    ],
)
def test_bad_values_name_source_key_value_and_what_is_accepted(
    tmp_path: Path, overrides: dict[str, str], environ: dict[str, str], toml: str, expected: str
) -> None:
    path = tmp_path / "r.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        load(overrides, config_path=str(path) if toml else None, environ=environ)
    assert str(info.value) == expected.format(path=path)


def test_text_values_are_converted_per_setting() -> None:
    s = load(
        {"log_level": "DEBUG", "queues": "a, b", "run_retention": "2h", "procs": " 3 "},
        environ={"REDFLOW_EMBEDDED_REDIS": "yes", "REDFLOW_MODULES": "x,y"},
    )
    assert (s.log_level, s.queues, s.run_retention, s.procs) == ("debug", ("a", "b"), 7200.0, 3)
    assert s.embedded_redis is True and s.modules == ("x", "y")


def test_procs_app_and_queues_are_checked_when_loaded() -> None:
    """``--procs 100000000`` ended in an OSError traceback (the shared board of a
    child per slot could not be allocated); ``--queues``/``--app`` holding bytes
    that are not UTF-8 (a lone surrogate), or a queue name over the 512-character
    limit, ended in a traceback from the first Redis command or registry sync."""
    for overrides, pattern in (
        ({"procs": "100000000"}, r"setting procs .*at most 4096"),
        ({"queues": "a,b\udcff"}, r"setting queues .*queue is not valid Unicode"),
        ({"queues": "q" * 600}, r"setting queues .*the limit is 512"),
        ({"app": "etl\udcff"}, r"setting app .*app is not valid Unicode"),
    ):
        with pytest.raises(ConfigError, match=pattern):
            load(overrides, environ={})
    assert load({"procs": "4096", "queues": "a,b", "app": "etl"}, environ={}).procs == 4096


def test_a_queue_name_with_a_comma_can_be_named_in_a_comma_separated_list() -> None:
    # --queues and REDFLOW_QUEUES split on commas: a queue named "media,hd" (a
    # valid name, and a TOML list could serve it) could not be named there; it
    # became the queues "media\" and "hd", and its runs waited forever.
    # "\," is a comma inside a name; every list written before still means the same.
    assert load({"queues": r"media\,hd, default"}, environ={}).queues == ("media,hd", "default")
    env = {"REDFLOW_QUEUES": r"a\,b\,c,d"}
    assert load({}, environ=env).queues == ("a,b,c", "d")
    assert load({"queues": r"a\b, c"}, environ={}).queues == (r"a\b", "c")
    assert load({"queues": ["x,y"]}, environ={}).queues == ("x,y",)
    ns = cli._parser().parse_args(["--app", "a", "--module", "m", "--queues", r"media\,hd,q"])
    assert load(cli._overrides(ns), environ={}).queues == ("media,hd", "q")


def test_every_queue_name_can_be_named_in_a_comma_separated_list() -> None:
    # A queue named "a\" followed by another could not be written ("a\,b" is the
    # queue "a,b"), and one with leading or trailing spaces lost them: the
    # supervisor silently served another queue. "\\" is a backslash, "\ " a kept
    # space (any whitespace); other backslashes are kept as written.
    assert load({"queues": r"a\\,b"}, environ={}).queues == ("a\\", "b")
    assert load({"queues": r"\ x, y\ ,z"}, environ={}).queues == (" x", "y ", "z")
    env = {"REDFLOW_QUEUES": "a\\\\, \\\tq\\\t "}
    assert load({}, environ=env).queues == ("a\\", "\tq\t")
    assert load({"queues": r"a\b, c\\"}, environ={}).queues == (r"a\b", "c\\")
    with pytest.raises(ConfigError, match="queue must be a non-empty string"):
        load({"queues": r"a,\ "}, environ={})


def test_a_cron_lock_ttl_shorter_than_a_renewal_round_is_refused() -> None:
    """``--cron-lock-ttl-ms 1`` was accepted (the minimum was 1): the leader
    renewed its lock every third of a millisecond, and the lock lapsed between
    two renewals anyway (a round trip is longer), so the supervisor lost and took
    the lead again about 250 times a second (a WARNING and an INFO line each,
    20x the Redis commands of the default, a fifth of a core) and crons fired
    late or not at all. Refused like a ``lease_ms`` below 300."""
    for value in ("1", "299"):
        with pytest.raises(ConfigError) as info:
            load({"cron_lock_ttl_ms": value}, environ={})
        assert str(info.value) == (
            f"bad value '{value}' for setting cron_lock_ttl_ms (from the command line, "
            "--cron-lock-ttl-ms): expected a whole number of milliseconds, at least 300 "
            "and at most 86400000"
        )
    assert load({"cron_lock_ttl_ms": "300"}, environ={}).cron_lock_ttl_ms == 300
