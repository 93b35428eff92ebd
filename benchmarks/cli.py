"""Command line: ``python -m benchmarks run ...`` and ``python -m benchmarks list``."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shutil
import sys
from pathlib import Path

from benchmarks.machine import describe
from benchmarks.model import (
    HANDLER_REDIS,
    NOOP,
    QUICK,
    VARIANTS,
    WORKLOADS,
    Options,
    Sizes,
)
from benchmarks.procs import install_signal_handlers, stop_all
from benchmarks.progress import Progress
from benchmarks.redis_server import RedisServer
from benchmarks.report import render, to_json, write_json
from benchmarks.runner import Runner
from benchmarks.systems import SYSTEMS, get_system


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


_SUFFIX = {"k": 1_000, "m": 1_000_000}


def _size(value: str) -> int:
    """``1000``, ``1_000``, ``1k`` or ``1m``."""
    text = value.strip().lower().replace("_", "").replace(",", "")
    mult = _SUFFIX.get(text[-1:], 1)
    digits = text[:-1] if mult > 1 else text
    try:
        size = int(float(digits) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size (e.g. 1000, 10k, 1m)") from None
    if size < 2:
        raise argparse.ArgumentTypeError(f"size {value!r} must be at least 2")
    return size


def _sizes(value: str) -> tuple[int, ...]:
    sizes = tuple(_size(v) for v in value.split(","))
    if list(sizes) != sorted(set(sizes)):
        raise argparse.ArgumentTypeError(f"{value!r}: sizes must be increasing")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the benchmark and print the tables")
    run.add_argument(
        "--systems",
        type=_csv,
        default=list(SYSTEMS),
        help=f"comma-separated, default all: {','.join(SYSTEMS)}",
    )
    run.add_argument(
        "--workloads",
        type=_csv,
        default=list(WORKLOADS),
        help=f"comma-separated, default all: {','.join(WORKLOADS)}",
    )
    run.add_argument("--procs", type=int, default=2, help="worker processes per system (2)")
    run.add_argument("--reps", type=int, default=None, help="repetitions (3; 1 with --quick)")
    run.add_argument("--json", type=Path, default=None, help="also write all results here")
    run.add_argument(
        "--quick",
        "--n-small",
        dest="quick",
        action="store_true",
        help="tiny sizes everywhere (a smoke test; the numbers mean nothing)",
    )
    run.add_argument(
        "--scale",
        action="store_true",
        help="also repeat W1 at several sizes (--scale-sizes; 1k, 10k and 100k runs)",
    )
    run.add_argument(
        "--scale-sizes",
        type=_sizes,
        default=None,
        help="increasing, e.g. 1k,10k,100k,1m (default 1k,10k,100k)",
    )
    run.add_argument(
        "--handler-redis",
        action="store_true",
        help="also measure W1, W3 and W4 with handlers that make one Redis call of their own",
    )
    run.add_argument(
        "--variants",
        type=_csv,
        default=None,
        help=f"handler variants, comma-separated: {','.join(VARIANTS)} (default {NOOP})",
    )
    run.add_argument("--n-bulk", type=int, default=None, help="W2B runs (20000)")
    run.add_argument("--bulk-batch", type=int, default=None, help="W2B runs per bulk call (1000)")
    run.add_argument(
        "--w2b-drain",
        action="store_true",
        help="W2B: also run the enqueued runs and wait for them (a check, not timed)",
    )
    run.add_argument("--n-profile", type=int, default=None, help="SLOWLOG pass runs (500)")
    run.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the SLOWLOG pass (Redis time by command/function; without it the Redis "
        "time of systems that use scripts is not shown)",
    )
    run.add_argument("--n-drain", type=int, default=None, help="W1/W2 runs (5000)")
    run.add_argument("--n-cpu", type=int, default=None, help="W3 runs (64)")
    run.add_argument("--cpu-ms", type=float, default=None, help="W3 ms per run (50)")
    run.add_argument("--n-rt", type=int, default=None, help="W4 round trips (200)")
    run.add_argument("--n-steps-runs", type=int, default=None, help="W5 runs (300)")
    run.add_argument("--n-fanout", type=int, default=None, help="W6 children (200)")
    run.add_argument("--n-monitor", type=int, default=None, help="MONITOR pass runs (500)")
    run.add_argument(
        "--no-monitor", action="store_true", help="skip the MONITOR pass (client/in-script split)"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    run.add_argument(
        "--stall-timeout", type=float, default=60.0, help="fail a case after S s without progress"
    )
    run.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.25,
        help="CPU (cores) other programs may use during a session before it is redone (0.25)",
    )
    run.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="seconds to wait for a quiet machine before each session (120; 0 with --quick)",
    )
    run.add_argument(
        "--retries",
        type=int,
        default=None,
        help="times a disturbed session is redone (2; 0 with --quick)",
    )
    run.add_argument("--logs", type=Path, default=None, help="directory for worker/client logs")
    run.add_argument("--redis-server", default="redis-server", help="redis-server binary")
    sub.add_parser("list", help="list the systems and whether they can run here")
    return parser


def make_sizes(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    overrides = {
        "drain": args.n_drain,
        "cpu_runs": args.n_cpu,
        "cpu_ms": args.cpu_ms,
        "rt": args.n_rt,
        "step_runs": args.n_steps_runs,
        "fanout": args.n_fanout,
        "monitor": args.n_monitor,
        "scale": args.scale_sizes,
        "bulk": args.n_bulk,
        "bulk_batch": args.bulk_batch,
        "profile": args.n_profile,
    }
    return dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})


def cmd_list() -> int:
    for name in SYSTEMS:
        system = get_system(name)
        reason = system.available()
        status = "ok" if reason is None else f"unavailable: {reason}"
        print(f"{name:<10} {status}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        systems = [get_system(name) for name in args.systems]
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    workloads = {w.upper() for w in args.workloads}
    unknown = workloads - set(WORKLOADS)
    if unknown:
        print(f"unknown workloads: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.procs < 1:
        print("--procs must be >= 1", file=sys.stderr)
        return 2
    variants = tuple(args.variants or ([NOOP, HANDLER_REDIS] if args.handler_redis else [NOOP]))
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        print(f"unknown variants: {', '.join(bad)} (known: {', '.join(VARIANTS)})", file=sys.stderr)
        return 2
    sizes = make_sizes(args)
    if "W2B" in workloads and not 1 <= sizes.bulk_batch < sizes.bulk:
        print(
            f"W2B needs 1 <= --bulk-batch ({sizes.bulk_batch}) < --n-bulk ({sizes.bulk}): "
            "the first batch is not timed",
            file=sys.stderr,
        )
        return 2
    options = Options(
        systems=systems,
        workloads=workloads,
        procs=args.procs,
        reps=args.reps if args.reps is not None else (1 if args.quick else 3),
        sizes=sizes,
        scale=args.scale,
        monitor=not args.no_monitor,
        profile=not args.no_profile,
        variants=variants,
        bulk_drain=args.w2b_drain,
        progress=not args.no_progress,
        stall_timeout=args.stall_timeout,
        logs_dir=args.logs,
        quiet_threshold=args.quiet_threshold,
        quiet_wait=args.quiet_wait if args.quiet_wait is not None else (0 if args.quick else 120),
        retries=args.retries if args.retries is not None else (0 if args.quick else 2),
    )
    progress = Progress(enabled=options.progress)
    install_signal_handlers()
    server = RedisServer(args.redis_server)
    runner: Runner | None = None
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        server.start()
        progress.note(f"redis-server {server.version} on {server.url} (persistence off)")
        runner = Runner(options, server, progress)
        progress.note(f"logs: {runner.logs}")
        runner.run()
        meta = {"started": started, **describe(server.version)}
    except KeyboardInterrupt:
        progress.note("interrupted; stopping everything the benchmark started")
        return 130
    finally:
        stop_all()
        server.stop()
    print(
        f"redflow-mp benchmarks, {meta['started']} to {meta['date']}: {meta['cpu']} "
        f"({meta['cpus']} CPUs), "
        f"{meta['os']}, Python {meta['python']}, redis-server {meta['redis_server']}, "
        f"redis-py {meta['redis_py']}; procs={options.procs}, reps={options.reps}; "
        "cells are median (min-max)"
    )
    if "W3" in workloads:
        print(
            f"W3 calibration: burn({runner.cpu_iterations:,}) = {runner.cpu_single_ms:.1f} ms "
            "in one process"
        )
    print(render(runner, options))
    if args.json is not None:
        write_json(args.json, to_json(runner, options, meta))
        print(f"\nJSON written to {args.json}")
    results = list(runner.results.values())
    failed = any(r.errors or r.status == "error" for r in results)
    if failed or args.logs is not None:
        print(f"worker and client logs: {runner.logs}")
    else:
        shutil.rmtree(runner.logs, ignore_errors=True)
    if not any(r.samples for r in results):
        return 2
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        return cmd_list()
    return cmd_run(args)
