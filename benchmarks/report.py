"""Result tables (medians, min-max, ratio to redflow) and the JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.runner import Options, Runner, SystemResult
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
        "W2 enqueue: {drain:,} runs enqueued one at a time by a single client process, normal API",
        (_m("w2.rate", "runs/s", "higher", ",.0f"),),
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
        "worker CPU = CPU of all worker processes from the first completion to the last, "
        "per run (less sensitive to other load on the machine than wall time)",
        (
            _m("cost.cmds_per_run", "all cmds", "lower", ".1f"),
            _m("cost.client_per_run", "client cmds", "lower", ".1f"),
            _m("cost.lua_per_run", "in-script", "", ".1f"),
            _m("cost.cpu_us_per_run", "Redis CPU us", "lower", ".1f"),
            _m("cost.worker_cpu_us_per_run", "worker CPU us", "lower", ",.0f"),
        ),
    ),
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
    block: Block, ran: list[SystemResult], base: SystemResult | None, params: dict[str, Any]
) -> str:
    first = block.metrics[0]
    arrow = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(first.better, "")
    header = ["system", *[m.label for m in block.metrics]]
    if base is not None:
        header.append(f"vs {BASELINE}{arrow}")
    rows = []
    for r in ran:
        row = [r.name]
        for m in block.metrics:
            row.append(fmt_summary(summarize(r.samples.get(m.key, [])), m.fmt))
        if base is not None:
            peer = summarize(r.samples.get(first.key, []))
            row.append(ratio(peer, summarize(base.samples.get(first.key, []))))
        rows.append(row)
    return block.title.format(**params) + "\n" + render_table(header, rows)


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
        if block.workload in options.workloads and any(k in r.samples for r in ran for k in keys):
            out += ["", render_block(block, ran, base, params)]
    if options.scale:
        out += ["", render_scale(ran, options.sizes.scale)]
    out += ["", *render_notes(results, options)]
    if base is None:
        out.append(f"  (no ratios: {BASELINE} was not measured in this run)")
    return "\n".join(out)


def render_scale(ran: list[SystemResult], sizes: tuple[int, ...]) -> str:
    lines = [
        "Scale (W1 at several sizes): us per run from the first completion; Redis used_memory "
        "after the drain per finished run (bytes, fixed overhead such as loaded scripts "
        "included); marginal = (memory at the largest size - at the next) / (difference in runs)"
    ]
    header = ["system"]
    for n in sizes:
        header += [f"{n:,} us/run", f"{n:,} B/run"]
    header.append(f"us/run {sizes[-1]:,} / {sizes[0]:,}")
    if len(sizes) > 1:
        header.append("marginal B/run")
    rows = []
    for r in ran:
        row = [r.name]
        for n in sizes:
            row.append(fmt_summary(summarize(r.samples.get(f"scale.{n}.us_per_run", [])), ",.0f"))
            row.append(
                fmt_summary(summarize(r.samples.get(f"scale.{n}.bytes_per_run", [])), ",.0f")
            )
        a = summarize(r.samples.get(f"scale.{sizes[-1]}.us_per_run", []))
        b = summarize(r.samples.get(f"scale.{sizes[0]}.us_per_run", []))
        row.append(ratio(a, b))
        if len(sizes) > 1:
            hi = summarize(r.samples.get(f"scale.{sizes[-1]}.memory_after_drain", []))
            lo = summarize(r.samples.get(f"scale.{sizes[-2]}.memory_after_drain", []))
            marginal = "-"
            if hi is not None and lo is not None:
                per_run = (hi.median - lo.median) / (sizes[-1] - sizes[-2])
                marginal = f"{per_run if abs(per_run) >= 0.5 else 0.0:,.0f}"
            row.append(marginal)
        rows.append(row)
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
