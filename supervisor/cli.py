"""``redflow-supervisor``: argv -> overrides -> settings.load -> Arbiter(...).run() -> exit status.

    redflow-supervisor --app etl --procs 8 --module jobs [--queues a,b]
        [--url redis://...] [--prefix redflow:prod] [--config conf/redflow.toml]

Every setting of ``conf/redflow.toml`` is also a flag (``lease_ms`` ->
``--lease-ms``). Modules are imported in the parent before any child is
forked; an import error stops start-up with the error on stderr and exit
status 2 (no restart loop). SIGHUP re-reads the config file and re-imports the
modules (new code is picked up by the next generation of children).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import subprocess
import sys
import sysconfig
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import msgspec

from redflow_mp import registry as registry_mod
from redflow_mp.errors import ConfigError
from redflow_mp.registry import Registry
from redflow_mp.transport import mask_url

from .arbiter import Arbiter, Reloaded
from .embedded import EmbeddedRedis
from .logs import configure_logging
from .settings import Settings, load

__all__ = ["main"]

EXIT_USAGE = 2

_FLAG_ONLY = {"app", "procs", "modules", "queues", "url", "prefix"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="redflow-supervisor",
        description="Run redflow-mp workflows in supervised, process-isolated children.",
    )
    p.add_argument("--app", help="application id (required; scopes registry sync)")
    p.add_argument("--procs", type=int, help="number of child processes (default: CPU count)")
    p.add_argument(
        "--module",
        dest="modules",
        action="append",
        metavar="MODULE",
        help="module (or path to a .py file) defining workflows; repeatable",
    )
    p.add_argument(
        "--queues",
        help="comma-separated queues to serve (default: all queues of the registered workflows)",
    )
    p.add_argument("--url", help="Redis URL (redis://, rediss:// for TLS; user:password@ for ACL)")
    p.add_argument("--prefix", help="key prefix / namespace (default: redflow)")
    p.add_argument("--config", help="TOML settings file (default: $REDFLOW_CONFIG)")
    for f in msgspec.structs.fields(Settings):
        if f.name in _FLAG_ONLY:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            p.add_argument(
                flag,
                dest=f.name,
                action="store_const",
                const=True,
                default=None,
                help=f"(setting {f.name})",
            )
        else:
            p.add_argument(
                flag,
                dest=f.name,
                default=None,
                metavar="VALUE",
                help=f"(setting {f.name}, default {f.default!r})",
            )
    return p


def _overrides(ns: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in msgspec.structs.fields(Settings):
        value = getattr(ns, f.name, None)
        if value is None:
            continue
        if f.name == "modules":
            value = tuple(value)
        out[f.name] = value
    return out


def _user_module(module: ModuleType) -> bool:
    """True for modules that a reload should import again (not stdlib/site-packages)."""
    path = getattr(module, "__file__", None)
    if not path:
        return False
    path = os.path.abspath(path)
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return not any(path.startswith(os.path.abspath(r) + os.sep) for r in roots if r)


def import_modules(names: Sequence[str]) -> None:
    """Import each workflow module (a dotted name, or a path to a .py file)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for name in names:
        if name.endswith(".py") or os.sep in name:
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
        else:
            importlib.import_module(name)


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
    ns = _parser().parse_args(argv)
    overrides = _overrides(ns)
    try:
        settings = load(overrides, config_path=ns.config)
    except ConfigError as exc:
        print(f"redflow-supervisor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not settings.app.strip():
        print("redflow-supervisor: --app is required and must be non-empty", file=sys.stderr)
        return EXIT_USAGE
    if not settings.modules:
        print("redflow-supervisor: at least one --module is required", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    loader = _Loader(overrides, ns.config)
    try:
        registry = loader.first(settings)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(
            f"redflow-supervisor: cannot import workflow modules {', '.join(settings.modules)}:",
            file=sys.stderr,
        )
        traceback.print_exception(exc, file=sys.stderr)
        return EXIT_USAGE
    if len(registry) == 0 and not settings.queues:
        print("redflow-supervisor: the modules define no workflows", file=sys.stderr)
        return EXIT_USAGE
    embedded: EmbeddedRedis | None = None
    if settings.embedded_redis:
        embedded = EmbeddedRedis(settings.state_dir or None)
        try:
            url = embedded.ensure()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"redflow-supervisor: cannot start the embedded Redis: {exc}", file=sys.stderr)
            return 1
        how = "started" if embedded.owned else "reused"
        print(
            f"redflow-supervisor: embedded Redis at {url} ({how}, state in {embedded.state_dir})",
            flush=True,
        )
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
            return 1
        return int(exc.code or 0)
    finally:
        if embedded is not None:
            embedded.stop()
