"""Result tables (medians, min-max, ratio to redflow) and the JSON file."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.model import (
    HANDLER_REDIS,
    NOOP,
    VARIANT_WORKLOADS,
    Options,
    SystemResult,
    vkey,
)
from benchmarks.runner import Runner
from benchmarks.stats import Summary, summarize
from benchmarks.systems import BASELINE


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str  # "higher", "lower" or "" (informational)
    fmt: str


@dataclass(frozen=True)
class Block:
    workload: str
    title: str
    metrics: tuple[Metric, ...]
    #: An ``extra`` key that, when set for a system, holds why it could not run.
    unavailable: str = ""


def _m(key: str, label: str, better: str, fmt: str) -> Metric:
    return Metric(key, label, better, fmt)


BLOCKS: tuple[Block, ...] = (
    Block(
        "W1",
        "W1 drain: {drain:,} no-op runs queued with the workers stopped, then the workers "
        "start; runs/s from the first completion to the last (and from spawning the workers)",
        (
            _m("w1.rate", "runs/s", "higher", ",.0f"),
            _m("w1.rate_spawn", "incl. start-up", "higher", ",.0f"),
        ),
    ),
    Block(
        "W2",
        "W2 enqueue: {drain:,} runs enqueued one at a time by a single client process, normal "
        "API; per enqueue: client CPU (the client process), Redis time (commandstats usec of "
        "top-level commands) and Redis CPU (used_cpu_user+sys)",
        (
            _m("w2.rate", "runs/s", "higher", ",.0f"),
            _m("w2.client_cpu_us", "client CPU us", "lower", ".1f"),
            _m("w2.redis_us", "Redis time us", "lower", ".1f"),
            _m("w2.redis_cpu_us", "Redis CPU us", "lower", ".1f"),
        ),
    ),
    Block(
        "W2B",
        "W2B bulk enqueue: {bulk:,} runs in batches of {bulk_batch:,} through each system's "
        "bulk path, one client process (the first batch untimed); per run: client CPU, Redis "
        "time, Redis CPU, Redis commands",
        (
            _m("w2b.rate", "runs/s", "higher", ",.0f"),
            _m("w2b.client_cpu_us", "client CPU us", "lower", ".1f"),
            _m("w2b.redis_us", "Redis time us", "lower", ".1f"),
            _m("w2b.redis_cpu_us", "Redis CPU us", "lower", ".1f"),
            _m("w2b.cmds_per_run", "cmds", "lower", ".2f"),
        ),
        unavailable="w2b_unavailable",
    ),
    Block(
        "W3",
        "W3 CPU: {cpu_runs} runs of burn({iterations:,}) (calibrated to {cpu_ms:.0f} ms) on "
        "{procs} processes; efficiency = ({cpu_runs} x single / {procs}) / wall, single = "
        "one burn in the harness, measured right before and after each W3; busy = time in "
        "handlers / "
        "({procs} x wall)",
        (
            _m("w3.efficiency", "efficiency", "higher", ".2f"),
            _m("w3.wall_s", "wall s", "lower", ".2f"),
            _m("w3.single_ms", "single ms", "", ".1f"),
            _m("w3.handler_ms", "in handler ms", "", ".1f"),
            _m("w3.busy_fraction", "busy", "higher", ".2f"),
        ),
    ),
    Block(
        "W4",
        "W4 round trip: {rt} sequential runs, enqueue then wait through the result API (ms)",
        (
            _m("w4.p50", "p50 ms", "lower", ".2f"),
            _m("w4.p90", "p90 ms", "lower", ".2f"),
            _m("w4.p99", "p99 ms", "lower", ".2f"),
        ),
    ),
    Block(
        "W5",
        "W5 steps: {step_runs} runs of {steps} steps; time per step measured inside the "
        "handler (redflow: ctx.step.run; peers: one SET per step written by hand)",
        (_m("w5.us_per_step", "us/step", "lower", ",.1f"),),
    ),
    Block(
        "W6",
        "W6 fan-out: one parent starts {fanout} children; seconds from enqueueing the parent "
        "until the parent and all children are done",
        (
            _m("w6.emit_s", "emit s", "lower", ".2f"),
            _m("w6.seq_s", "sequential s", "lower", ".2f"),
        ),
    ),
    Block(
        "W7",
        "W7 memory: RSS in MiB; parent = the supervising process (none for RQ/arq), "
        "child = mean over the worker processes",
        (
            _m("w7.child_idle_mib", "child idle", "lower", ".1f"),
            _m("w7.child_after_mib", "child after W1", "lower", ".1f"),
            _m("w7.parent_idle_mib", "parent idle", "lower", ".1f"),
            _m("w7.parent_after_mib", "parent after W1", "lower", ".1f"),
        ),
    ),
    Block(
        "W1",
        "Redis cost per run (W1, enqueue + execute; the handler's INCR and the harness's "
        "polling excluded). all = INFO commandstats incl. commands run inside Lua scripts; "
        "client / in-script = split measured by a separate MONITOR pass of {monitor} runs; "
        "Redis time = commandstats usec of top-level commands (a script's time counted once, "
        "with the in-script shares of the SLOWLOG pass); scripts = usec of EVAL/EVALSHA/FCALL "
        "(their inner commands included); Redis CPU = used_cpu_user+sys (includes the "
        "harness's polling and the idle serverCron)",
        (
            _m("cost.cmds_per_run", "all cmds", "lower", ".1f"),
            _m("cost.client_per_run", "client cmds", "lower", ".1f"),
            _m("cost.lua_per_run", "in-script", "", ".1f"),
            _m("cost.redis_us_per_run", "Redis time us", "lower", ".1f"),
            _m("cost.script_us_per_run", "scripts us", "", ".1f"),
            _m("cost.cpu_us_per_run", "Redis CPU us", "lower", ".1f"),
        ),
    ),
    Block(
        "W1",
        "CPU per run (W1). worker = CPU of the worker processes from the first completion to "
        "the last, per run; parent = the supervising process over the same span (Celery main, "
        "Dramatiq main, Huey consumer, redflow arbiter; RQ and arq have none; Huey's "
        "scheduler process counts as a worker); client = the client process per enqueue (W2 "
        "loop); Redis CPU / Redis time = execute phase only, per run",
        (
            _m("cost.worker_cpu_us_per_run", "worker CPU us", "lower", ",.0f"),
            _m("cost.parent_cpu_us_per_run", "parent CPU us", "lower", ",.1f"),
            _m("cost.client_cpu_us_per_enqueue", "client CPU us/enqueue", "lower", ".1f"),
            _m("cost.exec_redis_cpu_us_per_run", "Redis CPU us", "lower", ".1f"),
            _m("cost.exec_redis_us_per_run", "Redis time us", "lower", ".1f"),
        ),
    ),
)

VARIANT_NOTE = (
    "[handler-redis variant: every handler also makes one Redis call of its own, an INCR "
    "through the client its handlers use; that call is left out of the cost figures] "
)


def fmt_summary(s: Summary | None, fmt: str) -> str:
    if s is None:
        return "-"
    text = format(s.median, fmt)
    if s.n > 1:
        lo, hi = format(s.low, fmt), format(s.high, fmt)
        if lo != hi:
            text += f" ({lo}-{hi})"
    return text


def ratio(peer: Summary | None, base: Summary | None) -> str:
    if peer is None or base is None or base.median == 0:
        return ""
    return f"{peer.median / base.median:.2f}x"


def render_table(header: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append(indent + "  ".join(cells).rstrip())
    lines.insert(1, indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_block(
    block: Block,
    ran: list[SystemResult],
    base: SystemResult | None,
    params: dict[str, Any],
    variant: str = NOOP,
) -> str:
    metrics = [dataclasses.replace(m, key=vkey(m.key, variant)) for m in block.metrics]
    first = metrics[0]
    arrow = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(first.better, "")
    header = ["system", *[m.label for m in metrics]]
    if base is not None:
        header.append(f"vs {BASELINE}{arrow}")
    rows = []
    for r in ran:
        missing = r.extra.get(block.unavailable) if block.unavailable else None
        if missing and not any(r.samples.get(m.key) for m in metrics):
            rows.append([r.name, "not available"] + [""] * (len(header) - 2))
            continue
        row = [r.name]
        for m in metrics:
            row.append(fmt_summary(summarize(r.samples.get(m.key, [])), m.fmt))
        if base is not None:
            peer = summarize(r.samples.get(first.key, []))
            row.append(ratio(peer, summarize(base.samples.get(first.key, []))))
        rows.append(row)
    title = ("" if variant == NOOP else VARIANT_NOTE) + block.title.format(**params)
    return title + "\n" + render_table(header, rows)


def render_w1_variants(ran: list[SystemResult], base: SystemResult | None) -> str:
    """W1 with no-op handlers next to W1 with handlers that make one Redis call."""
    plain, called = "w1.rate", vkey("w1.rate", HANDLER_REDIS)
    header = ["system", "no-op runs/s", "+1 Redis call runs/s", "+call / no-op"]
    if base is not None:
        header += [f"no-op vs {BASELINE}", f"+call vs {BASELINE}"]
    rows = []
    for r in ran:
        a, b = summarize(r.samples.get(plain, [])), summarize(r.samples.get(called, []))
        row = [r.name, fmt_summary(a, ",.0f"), fmt_summary(b, ",.0f"), ratio(b, a)]
        if base is not None:
            row += [
                ratio(a, summarize(base.samples.get(plain, []))),
                ratio(b, summarize(base.samples.get(called, []))),
            ]
        rows.append(row)
    return (
        "W1 side by side: no-op handlers / handlers that also make one Redis call of their "
        "own (higher is better)\n" + render_table(header, rows)
    )


def _profile_row(name: str, phase: str, command: str, e: dict[str, Any]) -> list[str]:
    return [
        name,
        phase,
        command,
        f"{e['calls_per_run']:.2f}",
        f"{e['us_per_call']:.1f}",
        f"{e['us_per_run']:.1f}",
    ]


def render_profile(ran: list[SystemResult], top: int = 6) -> str:
    """Redis time by command, and by script/function name, from the SLOWLOG pass."""
    header = ["system", "phase", "command", "calls/run", "us/call", "us/run"]
    rows: list[list[str]] = []
    for r in ran:
        prof = r.extra.get("slowlog_pass")
        if not prof:
            continue
        name = r.name
        for phase in ("enqueue", "execute"):
            data = prof[phase]
            entries = data["top"]
            for e in entries[:top]:
                rows.append(_profile_row(name, phase, e["command"], e))
                name = ""
            rest = entries[top:]
            if rest:
                calls = sum(e["calls_per_run"] for e in rest)
                us = sum(e["us_per_run"] for e in rest)
                rows.append(["", phase, f"({len(rest)} others)", f"{calls:.2f}", "", f"{us:.1f}"])
            for e in data["in_script"][:top]:
                rows.append(_profile_row("", phase, f"  in script: {e['command']}", e))
            total = f"{data['top_level_us_per_run']:.1f}"
            rows.append(["", phase, "= top-level total", "", "", total])
    if not rows:
        return ""
    return (
        "Redis time by command (SLOWLOG pass of {n} runs: every command logged with its "
        "execution time; scripts and functions by name; 'in script' = commands run inside "
        "them, already part of the script's time); per run of the pass\n".format(
            n=next(r.extra["slowlog_pass"]["runs"] for r in ran if r.extra.get("slowlog_pass"))
        )
        + render_table(header, rows)
    )


def render_notes(results: dict[str, SystemResult], options: Options) -> list[str]:
    out = ["How each system ran:"]
    for r in results.values():
        if r.status == "skipped":
            out.append(f"  {r.name}: skipped, {r.reason}")
            continue
        versions = " ".join(f"{k} {v}" for k, v in r.versions.items())
        out.append(f"  {r.name} ({versions}): {r.config}")
        if "W5" in options.workloads:
            out.append(f"      W5 steps = {r.steps_idiom}")
        if "W6" in options.workloads:
            out.append(f"      W6 = {r.fanout_idiom or 'n/a'}")
        if "W2B" in options.workloads:
            out.append(f"      W2B = {r.bulk_idiom}")
            if r.extra.get("w2b_unavailable"):
                out.append(f"      W2B not available: {r.extra['w2b_unavailable']}")
        foreign = summarize(r.samples.get("load.drain_foreign", []))
        if foreign is not None:
            out.append(
                f"      CPU used by other programs during W1: median {foreign.median:.2f}, "
                f"max {foreign.high:.2f} cores"
            )
        disturbed = r.extra.get("disturbed_sessions") or []
        if disturbed:
            worst = max(d["foreign"] for d in disturbed)
            out.append(
                f"      {len(disturbed)} session(s) kept although other programs used up to "
                f"{worst:.2f} cores (no quiet attempt)"
            )
        for err in r.errors:
            out.append(f"      ! {err.splitlines()[0]}")
    return out


def render(runner: Runner, options: Options) -> str:
    results = runner.results
    ran = [r for r in results.values() if r.status != "skipped"]
    base = results.get(BASELINE)
    if base is None or base.status == "skipped" or not base.samples:
        base = None
    params = {
        **asdict(options.sizes),
        "procs": options.procs,
        "single_ms": runner.cpu_single_ms,
        "iterations": runner.cpu_iterations,
    }
    out: list[str] = []
    for block in BLOCKS:
        keys = [m.key for m in block.metrics]
        measured = any(k in r.samples for r in ran for k in keys)
        missing = bool(block.unavailable) and any(block.unavailable in r.extra for r in ran)
        if block.workload in options.workloads and (measured or missing):
            out += ["", render_block(block, ran, base, params)]
    if HANDLER_REDIS in options.variants:
        if NOOP in options.variants and "W1" in options.workloads:
            out += ["", render_w1_variants(ran, base)]
        for block in BLOCKS:
            if block.workload not in VARIANT_WORKLOADS or block.workload not in options.workloads:
                continue
            keys = [vkey(m.key, HANDLER_REDIS) for m in block.metrics]
            if any(k in r.samples for r in ran for k in keys):
                out += ["", render_block(block, ran, base, params, HANDLER_REDIS)]
    profile = render_profile(ran)
    if profile:
        out += ["", profile]
    if options.scale:
        out += ["", render_scale(ran, options.sizes.scale)]
    out += ["", *render_notes(results, options)]
    if base is None:
        out.append(f"  (no ratios: {BASELINE} was not measured in this run)")
    return "\n".join(out)


def _marginal(r: SystemResult, key: str, sizes: tuple[int, ...]) -> str:
    """(memory at the largest size - at the next) / (difference in runs), in bytes."""
    hi = summarize(r.samples.get(f"scale.{sizes[-1]}.{key}", []))
    lo = summarize(r.samples.get(f"scale.{sizes[-2]}.{key}", []))
    if hi is None or lo is None:
        return "-"
    per_run = (hi.median - lo.median) / (sizes[-1] - sizes[-2])
    return f"{per_run if abs(per_run) >= 0.5 else 0.0:,.0f}"


def render_scale(ran: list[SystemResult], sizes: tuple[int, ...]) -> str:
    lines = [
        "Scale (W2 and W1 at several sizes): enqueue us per run (one by one, one client); "
        "drain us per run (from the first completion); Redis used_memory after the enqueue "
        "per queued run and after the drain per finished run (bytes, fixed overhead such as "
        "loaded scripts included); 'vs first' = us per run at this size / at the smallest "
        "(flat is 1.00x); marginal = (memory at the largest size - at the next) / "
        "(difference in runs)"
    ]
    header = [
        "system",
        "runs",
        "enqueue us/run",
        "vs first",
        "drain us/run",
        "vs first",
        "B/queued run",
        "B/finished run",
    ]
    rows = []
    for r in ran:
        first_enq = summarize(r.samples.get(f"scale.{sizes[0]}.enqueue_us_per_run", []))
        first_run = summarize(r.samples.get(f"scale.{sizes[0]}.us_per_run", []))
        name = r.name
        for n in sizes:
            enq = summarize(r.samples.get(f"scale.{n}.enqueue_us_per_run", []))
            run = summarize(r.samples.get(f"scale.{n}.us_per_run", []))
            rows.append(
                [
                    name,
                    f"{n:,}",
                    fmt_summary(enq, ",.1f"),
                    ratio(enq, first_enq),
                    fmt_summary(run, ",.1f"),
                    ratio(run, first_run),
                    fmt_summary(
                        summarize(r.samples.get(f"scale.{n}.bytes_per_queued", [])), ",.0f"
                    ),
                    fmt_summary(summarize(r.samples.get(f"scale.{n}.bytes_per_run", [])), ",.0f"),
                ]
            )
            name = ""
        if len(sizes) > 1:
            rows.append(
                [
                    "",
                    "marginal",
                    "",
                    "",
                    "",
                    "",
                    _marginal(r, "memory_after_enqueue", sizes),
                    _marginal(r, "memory_after_drain", sizes),
                ]
            )
    lines.append(render_table(header, rows))
    return "\n".join(lines)


def to_json(runner: Runner, options: Options, meta: dict[str, Any]) -> dict[str, Any]:
    systems: dict[str, Any] = {}
    for name, r in runner.results.items():
        systems[name] = {
            "status": r.status,
            "reason": r.reason,
            "config": r.config,
            "fanout_idiom": r.fanout_idiom,
            "steps_idiom": r.steps_idiom,
            "bulk_idiom": r.bulk_idiom,
            "versions": r.versions,
            "errors": r.errors,
            "summary": {
                k: (s.to_json() if (s := summarize(v)) else None) for k, v in r.samples.items()
            },
            "samples": r.samples,
            "extra": r.extra,
        }
    return {
        "meta": meta,
        "options": {
            "systems": [s.name for s in options.systems],
            "workloads": sorted(options.workloads),
            "procs": options.procs,
            "reps": options.reps,
            "sizes": asdict(options.sizes),
            "scale": options.scale,
            "monitor": options.monitor,
        },
        "calibration": {
            "iterations": runner.cpu_iterations,
            "single_ms": runner.cpu_single_ms,
        },
        "systems": systems,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
