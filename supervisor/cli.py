"""``redflow-supervisor``: argv -> overrides -> settings.load -> Arbiter(...).run() -> exit status.

    redflow-supervisor --app etl --procs 8 --module jobs [--queues a,b]
        [--url redis://...] [--prefix redflow:prod] [--config conf/redflow.toml]

Every setting is also a flag (``lease_ms`` -> ``--lease-ms``) whose help is the
setting's own documentation (``redflow_supervisor.settings``, which also checks every
value: this module only parses argv). Modules are imported in the parent before
any child is forked; an import error stops start-up with exit status 2 and the
module's own exception in two lines (the traceback with ``--log-level debug``),
never a restart loop. SIGHUP re-reads the config file and re-imports the
modules (new code is picked up by the next generation of children).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
import sysconfig
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from redflow_mp import __version__
from redflow_mp import registry as registry_mod
from redflow_mp.errors import ConfigError
from redflow_mp.registry import Registry
from redflow_mp.transport import mask_url

from . import early
from .arbiter import Arbiter, Reloaded
from .early import StartupStop
from .logs import configure_logging, mask_secrets
from .reference import fmt_default
from .settings import SECTIONS, Settings, Spec, load, specs
from .startup import BadSettings

if TYPE_CHECKING:
    from .embedded import EmbeddedRedis

__all__ = ["main"]

EXIT_USAGE = 2
_URL_DEFAULT: str = next(s.default for s in specs() if s.name == "url")

_EPILOG = """\
examples:
  redflow-supervisor --app etl --procs 8 --module jobs
  REDFLOW_URL=redis://:secret@redis.internal:6379/0 redflow-supervisor --app etl \\
      --module jobs --module reports.py --queues media,default \\
      --config conf/redflow.toml --metrics-port 9464

signals (to the parent process):
  TERM                    graceful drain: stop claiming, let running handlers finish
                          (up to --graceful-timeout), then stop them; runs go back; exit 0
  second TERM, INT, QUIT  fast stop: children exit now, their runs go back at once
  HUP                     re-read the config, re-import the modules, replace the
                          children one by one
  TTIN / TTOU             one child more / less

Every setting is also REDFLOW_<NAME> in the environment (REDFLOW_LEASE_MS=8000) and a
key of the --config TOML file (conf/redflow.toml documents each one); precedence:
defaults < TOML < environment < flags. Exit status: 0 drained, 1 a fatal error
(FATAL child slot, Redis unreachable at start), 2 bad usage or workflow modules that
do not import.
"""


def _help(spec: Spec) -> str:
    """--help text of one setting, from its own documentation (settings.py)."""
    if spec.kind is bool:
        extra = "a flag"
    elif spec.choices:
        extra = f"default {spec.default}"
    elif spec.default in ("", ()):
        extra = _unit_text(spec).rstrip("; ")
    else:
        extra = f"{_unit_text(spec)}default {fmt_default(spec)}"
    text = spec.description + (f" ({extra})" if extra else "")
    return text.replace("%", "%%")


def _unit_text(spec: Spec) -> str:
    if spec.duration:
        return "seconds, or 500ms/30s/5m/2h/7d; "
    words = {"ms": "milliseconds", "MiB": "MiB", "bytes": "bytes"}
    return f"{words[spec.unit]}; " if spec.unit else ""


def _metavar(spec: Spec) -> str:
    if spec.metavar:
        return spec.metavar
    if spec.duration:
        return "SECONDS"
    return {"ms": "MS", "MiB": "MIB", "bytes": "BYTES"}.get(spec.unit, "N")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not the whole usage block: ``prog: message (see prog --help)``."""
        text = mask_secrets(message)  # a URL given as another flag's value
        self.exit(EXIT_USAGE, f"{self.prog}: {text} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="redflow-supervisor",
        description="Run redflow-mp workflows in supervised, process-isolated children:\n"
        "one parent forks --procs children; each runs one workflow handler at a time.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--version", action="version", version=f"redflow-supervisor {__version__} (redflow-mp)"
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help="TOML settings file (default: $REDFLOW_CONFIG; none: defaults, environment, flags)",
    )
    groups: dict[str, Any] = {}
    for spec in specs():
        group = groups.get(spec.section)
        if group is None:
            group = groups[spec.section] = p.add_argument_group(SECTIONS[spec.section])
        if spec.kind is bool:
            group.add_argument(
                spec.option, dest=spec.name, action="store_const", const=True, help=_help(spec)
            )
        elif spec.choices:
            # Checked by settings.load like every other source (one message for all).
            metavar = "{" + ",".join(spec.choices) + "}"
            group.add_argument(spec.option, dest=spec.name, metavar=metavar, help=_help(spec))
        elif spec.name == "modules":
            group.add_argument(
                spec.option,
                dest=spec.name,
                action="append",
                metavar=_metavar(spec),
                help=_help(spec),
            )
        else:
            group.add_argument(
                spec.option, dest=spec.name, metavar=_metavar(spec), help=_help(spec)
            )
    return p


def _overrides(ns: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # The field names (msgspec.structs.fields would also evaluate every annotation).
    for name in Settings.__struct_fields__:
        value = getattr(ns, name, None)
        if value is None:
            continue
        if name == "modules":
            value = tuple(value)
        out[name] = value
    return out


def _library_path(path: str) -> bool:
    """True for a file of the standard library, of an installed distribution, or
    of redflow-mp itself (also when it is installed editable, from a clone)."""
    path = os.path.abspath(path)
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {os.path.dirname(registry_mod.__file__), os.path.dirname(__file__)}
    return any(path.startswith(os.path.abspath(r) + os.sep) for r in roots if r)


def _user_module(module: ModuleType) -> bool:
    """True for modules that a reload should import again (not stdlib/site-packages)."""
    path = getattr(module, "__file__", None)
    if not path:
        return False
    return not _library_path(path)


class ModuleImportError(ImportError):
    """A workflow module did not import; ``__cause__`` is the module's own exception."""

    def __init__(self, module: str, cause: BaseException) -> None:
        super().__init__(
            f"cannot import workflow module {module!r}: {type(cause).__name__}: {cause}"
        )
        self.module = module

    def location(self) -> str | None:
        """``file, line N`` where the module's own code raised (None: in the import
        machinery, e.g. a module that does not exist)."""
        cause = self.__cause__
        if isinstance(cause, SyntaxError) and cause.filename:
            return None  # its message already names the file and line
        frames = traceback.extract_tb(cause.__traceback__) if cause is not None else []
        ours = [
            f
            for f in frames
            if not f.filename.startswith("<")
            and "importlib" not in f.filename
            and f.filename != __file__
        ]
        # The innermost line of the application's own code (the module, or a helper
        # of it), not the library frame below it (json's decoder for a json.loads
        # in the module): that line is the one to fix.
        for frame in reversed(ours):
            if not _library_path(frame.filename):
                return f"{os.path.relpath(frame.filename)}, line {frame.lineno}"
        if ours:
            return f"{os.path.relpath(ours[-1].filename)}, line {ours[-1].lineno}"
        return None


def import_modules(names: Sequence[str]) -> None:
    """Import each workflow module (a dotted name, or a path to a .py file).

    Raises :class:`ModuleImportError` naming the module, caused by its own exception.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for name in names:
        try:
            _import_one(name)
        except (KeyboardInterrupt, StartupStop, ModuleImportError):
            raise
        except BaseException as exc:  # SystemExit too: a module must not end start-up
            raise ModuleImportError(name, exc) from exc


def _import_one(name: str) -> None:
    if not (name.endswith(".py") or os.sep in name):
        importlib.import_module(name)
        return
    path = os.path.abspath(name)
    if not os.path.exists(path):
        raise ImportError(f"workflow module file {name} does not exist")
    mod_name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)


class _Loader:
    """Imports the workflow modules; on reload, drops user modules and imports again."""

    def __init__(self, overrides: dict[str, Any], config: str | None) -> None:
        self.overrides = overrides
        self.config = config
        self.baseline = set(sys.modules)

    def first(self, settings: Settings) -> Registry:
        import_modules(settings.modules)
        return registry_mod.get_default_registry()

    def reload(self) -> Reloaded:
        settings = load(self.overrides, config_path=self.config)
        saved_modules = dict(sys.modules)
        saved_registry = registry_mod.get_default_registry()
        for name, module in list(sys.modules.items()):
            if name not in self.baseline and _user_module(module):
                del sys.modules[name]
        fresh = registry_mod.reset_default_registry()
        try:
            import_modules(settings.modules)
        except BaseException:
            sys.modules.clear()
            sys.modules.update(saved_modules)
            registry_mod.reset_default_registry(saved_registry)
            raise
        return Reloaded(settings, fresh)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except StartupStop as stop:  # TERM/INT/QUIT before the loop ran: supervisor/early.py
        return early.report_stop(stop)


def _usage_problem(settings: Settings) -> str | None:
    """Why ``settings`` cannot start a supervisor (exit status 2), or None."""
    if not settings.app.strip():
        return "--app is required and must be non-empty"
    if not settings.modules:
        return "at least one --module is required"
    if settings.embedded_redis and settings.url != _URL_DEFAULT:
        # (as in redflow: the supervisor would serve its own server, not the URL's)
        return (
            f"embedded_redis and url ({mask_url(settings.url)}) exclude each other: the "
            "supervisor would serve a private Redis, and runs enqueued at that URL would "
            "wait forever; unset one (url also comes from REDFLOW_URL or a config file)"
        )
    return None


def _main(argv: Sequence[str] | None) -> int:
    ns = _parser().parse_args(argv)
    overrides = _overrides(ns)
    try:
        settings = load(overrides, config_path=ns.config)
    except ConfigError as exc:
        print(f"redflow-supervisor: {mask_secrets(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    problem = _usage_problem(settings)
    if problem is not None:
        print(f"redflow-supervisor: {mask_secrets(problem)}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    loader = _Loader(overrides, ns.config)
    try:
        registry = loader.first(settings)
    except ModuleImportError as exc:
        # The module's own exception in a line or two; the traceback only on request.
        print(f"redflow-supervisor: {exc}", file=sys.stderr)
        where = exc.location()
        if settings.log_level == "debug":
            traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        else:
            at = f"raised at {where}; " if where else ""
            print(f"  ({at}--log-level debug shows the traceback)", file=sys.stderr)
        return EXIT_USAGE
    if len(registry) == 0 and not settings.queues:
        print("redflow-supervisor: the modules define no workflows", file=sys.stderr)
        return EXIT_USAGE
    embedded: EmbeddedRedis | None = None
    if settings.embedded_redis:
        import subprocess  # only here: --embedded-redis

        from .embedded import EmbeddedRedis

        embedded = EmbeddedRedis(settings.state_dir or None)
        try:
            url = embedded.ensure()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"redflow-supervisor: cannot start the embedded Redis: {exc}", file=sys.stderr)
            return 1
        print(f"redflow-supervisor: {embedded.describe()}", flush=True)
        settings = msgspec.structs.replace(settings, url=url)
        loader.overrides = {**loader.overrides, "url": url}
    logging.getLogger("redflow_supervisor").debug(
        "settings: url=%s prefix=%s", mask_url(settings.url), settings.prefix
    )
    try:
        return Arbiter(settings, registry, loader.reload).run()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return EXIT_USAGE if isinstance(exc, BadSettings) else 1
        return int(exc.code or 0)
    finally:
        if embedded is not None:
            embedded.stop()
