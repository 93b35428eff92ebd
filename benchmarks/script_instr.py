"""Instructions redis-server spends per call of each hot script, counted by
callgrind: the figure of ``benchmarks.script_cost`` that a busy machine cannot
blur.

``python -m benchmarks.script_instr [--calls 2000] [--ref REF]``

A private redis-server runs under ``valgrind --tool=callgrind`` with its
counters off; the scripts are loaded and each call is made a few hundred times
to warm up. Then, for each figure, the counters are zeroed
(``callgrind_control -z``), ``--calls`` calls are sent pipelined in batches of
100, and the counters are dumped (``callgrind_control -d``): the dump's total
over the calls is the server's user-space instructions per call (its event loop
and the reading and writing of the batch included, shared by 100 calls). The
calls are those of ``benchmarks.script_cost``: ``enqueue_run`` (a plain run),
``claim_run`` claiming only, ``claim_run`` finishing one run and claiming the
next (the worker's steady state), ``claim_run`` finishing only (``succeeded``), as
``EVALSHA``; ``--fcall`` adds the function library's ``FCALL`` of each.

``--ref REF`` also measures a git ref's scripts (its export, as
``benchmarks.enqueue_cost --baseline`` does), on the same server binary.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.script_cost import QUEUE, TAG, WORKFLOW  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

BATCH = 100
WARM = 300


def _enqueue(run_id: str) -> tuple[Any, ...]:
    return (1, "k", TAG, run_id, WORKFLOW, QUEUE, "{}", 1, "100000")


def _claim(token: str, mode: str = "", run_id: str = "", held: str = "") -> tuple[Any, ...]:
    payload = "null" if mode else ""
    return (1, f"{TAG}:q:{QUEUE}:ready", TAG, 60000, token, mode, run_id, held, payload, 0, "", "",
            1, QUEUE)  # fmt: skip


class Counted:
    """A redis-server under callgrind, its counters zeroed and dumped on demand."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        wrapper = workdir / "redis-under-callgrind"
        self.out = workdir / "callgrind.out"
        server = RedisServer()
        wrapper.write_text(
            "#!/bin/sh\nexec valgrind --tool=callgrind --collect-atstart=yes "
            f'--callgrind-out-file={self.out} {server.binary} "$@"\n'
        )
        wrapper.chmod(0o755)
        server.binary = str(wrapper)
        self.server = server
        self.dumps = 0

    def start(self) -> None:
        self.server.start()
        deadline = time.monotonic() + 30
        while not self._pid():  # the wrapper exec'd valgrind: same pid
            if time.monotonic() > deadline:
                raise RuntimeError("callgrind did not start")
            time.sleep(0.1)

    def _pid(self) -> int | None:
        return self.server.proc.pid if self.server.proc is not None else None

    def _control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self._pid())], check=True,
                       capture_output=True)  # fmt: skip

    def zero(self) -> None:
        self._control("-z")

    def dump(self, keep: Path | None = None) -> int:
        """Instructions since the last zero (a dump file of its own, copied to
        ``keep`` when given: ``callgrind_annotate --inclusive=yes`` reads it)."""
        self._control("-d")
        self.dumps += 1
        for _ in range(100):
            for path in self.workdir.glob("callgrind.out*"):
                text = path.read_text(errors="replace")
                m = re.search(rf"^part: {self.dumps}\b", text, re.M)
                t = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
                if m and t:
                    if keep is not None:
                        keep.write_text(text)
                    path.unlink()
                    return int(t.group(1))
            time.sleep(0.1)
        raise RuntimeError("no callgrind dump appeared")

    def stop(self) -> None:
        self.server.stop()


def _send(r: Any, calls: list[tuple[Any, ...]]) -> list[Any]:
    replies: list[Any] = []
    for i in range(0, len(calls), BATCH):
        pipe = r.pipeline(transaction=False)
        for call in calls[i : i + BATCH]:
            pipe.execute_command(*call)
        replies += pipe.execute()
    return replies


def _figures(
    counted: Counted, call: Callable[[str], tuple[Any, ...]], n: int, keep: Path | None = None
) -> dict[str, float]:
    def kept(name: str) -> Path | None:
        return keep / f"{name}.callgrind" if keep is not None else None

    r = counted.server.client()
    # the workflow's metadata as a worker's sync writes it (the claim reads its limit there)
    r.hset(f"{TAG}:workflow:{WORKFLOW}", mapping={"name": WORKFLOW, "queue": QUEUE,
           "maxConcurrency": 100000, "app": "bench"})  # fmt: skip
    out: dict[str, float] = {}
    for size, counting in ((WARM, False), (n, True)):
        enq = [(*call("enqueue_run"), *_enqueue(uuid.uuid4().hex)) for _ in range(size)]
        tokens = [uuid.uuid4().hex for _ in range(size)]
        claims = [(*call("claim_run"), *_claim(t)) for t in tokens]
        if counting:
            counted.zero()
        _send(r, enq)
        if counting:
            out["enqueue_run"] = counted.dump(kept("enqueue")) / size
        replies = _send(r, claims)
        if counting:
            out["claim_run (claim)"] = counted.dump(kept("claim")) / size
        ids = [reply[1][0].decode() for reply in replies]
        # the steady state: each call finishes a run claimed above and claims the next
        steady_tokens = [uuid.uuid4().hex for _ in range(size)]
        steady = [(*call("claim_run"), *_claim(s, "succeeded", i, t))
                  for s, i, t in zip(steady_tokens, ids, tokens, strict=True)]  # fmt: skip
        _send(r, [(*call("enqueue_run"), *_enqueue(uuid.uuid4().hex)) for _ in range(size)])
        if counting:
            counted.zero()
        replies = _send(r, steady)
        if counting:
            out["claim_run (finish+claim)"] = counted.dump(kept("steady")) / size
        if any(reply[0] != b"succeeded" or not reply[1] for reply in replies):
            raise RuntimeError(f"a steady-state call was refused: {replies[:2]!r}")
        ids, tokens = [reply[1][0].decode() for reply in replies], steady_tokens
        finishes = [(*call("claim_run"), *_claim("", "succeeded", i, t))
                    for i, t in zip(ids, tokens, strict=True)]  # fmt: skip
        if counting:
            counted.zero()
        replies = _send(r, finishes)
        if counting:
            out["claim_run (finish)"] = counted.dump(kept("finish")) / size
        if any(reply[0] != b"succeeded" for reply in replies):
            raise RuntimeError(f"a finish was refused: {replies[:2]!r}")
    r.close()
    return out


def _sources(tree: Path) -> tuple[dict[str, str], str, dict[str, str]]:
    """The EVALSHA texts, the function library and its names, of the tree at ``tree``."""
    code = (
        "import json, sys\n"
        "from redflow_mp.luafiles import build_library, load_sources, read_lua\n"
        "lib, names = build_library(*read_lua())\n"
        "json.dump([load_sources((7, 0)), lib, names], sys.stdout)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tree))
    got = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, check=True,
                         capture_output=True, text=True)  # fmt: skip
    import json

    sources, library, names = json.loads(got.stdout)
    return sources, library, names


def measure_tree(
    tree: Path, n: int, fcall: bool, keep: Path | None = None
) -> dict[str, dict[str, float]]:
    sources, library, names = _sources(tree)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="redflow-script-instr-") as tmp:
        counted = Counted(Path(tmp))
        counted.start()
        try:
            r = counted.server.client()
            shas = {k: r.script_load(v) for k, v in sources.items()}
            modes: list[tuple[str, Callable[[str], tuple[Any, ...]]]] = [
                ("EVALSHA", lambda name: ("EVALSHA", shas[name]))
            ]
            if fcall:
                r.function_load(library, replace=True)
                modes.append(("FCALL", lambda name: ("FCALL", names[name])))
            for mode, call in modes:
                r.flushdb()
                sub = None
                if keep is not None:
                    sub = keep / mode.lower()
                    sub.mkdir(parents=True, exist_ok=True)
                for name, instr in _figures(counted, call, n, sub).items():
                    results.setdefault(name, {})[mode] = instr
            r.close()
        finally:
            counted.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.script_instr", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--ref", default=None, help="also measure this git ref's scripts")
    ap.add_argument("--fcall", action="store_true", help="also measure the function library")
    ap.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep each figure's callgrind dump in this directory (per mode; read "
        "the per-function inclusive costs with callgrind_annotate --inclusive=yes)",
    )
    opts = ap.parse_args(argv)
    trees: list[tuple[str, Path]] = [("this tree", ROOT)]
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if opts.ref:
        from benchmarks.child_cost import export_ref

        tmp = tempfile.TemporaryDirectory(prefix="redflow-ref-")
        trees.append((opts.ref, export_ref(opts.ref, Path(tmp.name))))
    try:
        for label, tree in trees:
            keep = opts.keep / re.sub(r"[^A-Za-z0-9]", "_", label) if opts.keep else None
            res = measure_tree(tree, opts.calls, opts.fcall, keep)
            modes = sorted({m for by in res.values() for m in by})
            print(f"{label}: redis-server instructions per call "
                  f"({opts.calls} calls, batches of {BATCH})")  # fmt: skip
            print(f"  {'script':24}" + "".join(f" {m:>10}" for m in modes))
            for name, by_mode in res.items():
                print(f"  {name:24}" + "".join(f" {by_mode[m]:10,.0f}" for m in modes))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
