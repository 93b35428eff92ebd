"""What keeps the supervisor's start-up short, checked by structure (never by timing).

- Importing the supervisor's command leaves out the modules only other commands,
  rare settings or the asyncio client need (each would be imported, and on a
  fresh install compiled, by every start), OpenTelemetry (redis-py 8 imports
  its SDK at ``import redis`` when installed: ``redflow_mp/redispy.py``) and
  psutil (the status duty's first sample is after the fork); redis-py's own
  OpenTelemetry metrics can still be turned on afterwards.
- ``redflow-supervisor`` pauses the garbage collector for its start-up; the
  arbiter freezes what start-up made and resumes collecting before it forks.
- The scripts' sources are read and built once per process (the supervisor
  builds them before forking: tests/integration/test_supervisor_startup.py).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from redflow_mp import luafiles, scripts
from redflow_supervisor.startup import end_of_startup

#: Never imported by ``import redflow_supervisor.cli`` (the supervisor's normal path).
OFF_THE_PATH = (
    "croniter",  # cron expressions: parsed on first use
    "dateutil",
    "tomllib",  # only with a config file
    "zoneinfo",  # only with a cron schedule
    "difflib",  # only to suggest a misspelt setting
    "redflow_supervisor.embedded",  # only with --embedded-redis
    "redflow_supervisor.ops",  # the `redflow` command and its dashboard
    "redflow_mp.aio",  # the asyncio client
    "redflow_mp.aio_transport",
    "redflow_mp.aio_resp",
    "redflow_mp.aio_scripts",
    "redflow_mp.aio_connection",
    "redflow_mp.aio_shards",
    "redflow_mp.reshard",  # `redflow migrate --shards`
    "importlib.resources.readers",  # reading lua/*.lua: done once, when connecting
    "opentelemetry",  # tracing is the application's: redispy.py keeps redis-py's import out
    "psutil",  # process samples (status, metrics, memory duties): after the first fork
)


def _imported_by(statement: str) -> list[str]:
    code = (
        f"import json, sys\n{statement}\n"
        f"print(json.dumps(sorted(m for m in {OFF_THE_PATH!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    found: list[str] = json.loads(done.stdout)
    return found


def test_the_supervisor_command_imports_no_optional_module() -> None:
    assert _imported_by("import redflow_supervisor.cli") == []


def test_the_redflow_command_imports_no_opentelemetry() -> None:
    # `redflow` (the operators' command) imported redis-py before the library, and
    # with it OpenTelemetry's metrics SDK at every start (each CLI test paid it too).
    found = _imported_by("import redflow_supervisor.ops.cli")
    assert "opentelemetry" not in found, found


def test_the_library_imports_no_optional_module() -> None:
    assert _imported_by("import redflow_mp") == []


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_redis_py_metrics_can_still_be_turned_on_after_the_import() -> None:
    # Its availability flag as redis-py's own import would have set it (the extra
    # is installed here), and its collector builds on the OpenTelemetry API.
    code = (
        "import sys\n"
        "import redflow_mp\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "from opentelemetry import metrics\n"
        "from redis.observability import metrics as rm, providers\n"
        "from redis.observability.config import OTelConfig\n"
        "rm.RedisMetricsCollector(metrics.get_meter('test'), OTelConfig())\n"
        "print(rm.OTEL_AVAILABLE, providers.OTEL_AVAILABLE)\n"
    )
    assert _run(code) == "True True"


def test_an_application_that_imported_opentelemetry_first_gets_redis_py_as_it_is() -> None:
    code = (
        "import sys\n"
        "import opentelemetry.trace\n"
        "import redflow_mp\n"
        "print('opentelemetry.sdk.metrics' in sys.modules)\n"  # redis-py's own import
    )
    assert _run(code) == "True"


def test_the_command_pauses_the_collector_for_its_start_up() -> None:
    code = (
        "import gc\n"
        "import redflow_supervisor.cli as cli\n"
        "from redflow_supervisor import entry\n"
        "cli.main = lambda: print(gc.isenabled()) or 0\n"
        "raise SystemExit(entry.supervisor())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_the_end_of_start_up_freezes_and_resumes_collecting() -> None:
    frozen = gc.get_freeze_count()
    gc.disable()
    try:
        end_of_startup()
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
        gc.enable()


def test_with_the_collector_on_nothing_is_frozen() -> None:
    frozen = gc.get_freeze_count()
    end_of_startup()
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def test_the_lua_sources_are_read_and_built_once_per_process() -> None:
    luafiles._lua_files.cache_clear()
    luafiles._sources.cache_clear()
    first = scripts.load_sources((7, 0, 15))
    first["claim_run"] = "changed by a caller"
    second = scripts.load_sources((7, 0, 15))
    assert second["claim_run"] != "changed by a caller"  # each caller gets its own dict
    assert luafiles._lua_files.cache_info().misses == 1
    assert luafiles._sources.cache_info().hits == 1
    _lib, bodies = luafiles.read_lua()
    bodies["claim_run"] = "changed"
    assert luafiles.read_lua()[1]["claim_run"] != "changed"
    assert luafiles._lua_files.cache_info().misses == 1
