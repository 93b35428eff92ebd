"""The ``on_failure`` helper the arbiter forks (``children.fork_on_failure``) makes
its client from the same mapping as a child's (``child.spec_client``): every
client setting of the supervisor reaches it. It built its client by hand and left
out ``max_events_per_run`` and ``max_event_bytes_per_run``, so a hook that sent
events ran with the library's defaults instead of the operator's limits.

The fork runs in a fresh interpreter (the helper blocks signals and ends in
``os._exit``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from redflow_supervisor.child import ChildSpec
from redflow_supervisor.settings import ClientKeywords, client_keywords, load
from tests.process.conftest import ROOT

SCRIPT = """
import json, os, sys
from redflow_mp.registry import Registry
from redflow_supervisor import children
from redflow_supervisor.child import ChildSpec

def fake(client, registry, run_id):
    with open(sys.argv[1], "w") as out:
        json.dump({
            "run_id": run_id,
            "max_events_per_run": client.max_events_per_run,
            "max_event_bytes_per_run": client.max_event_bytes_per_run,
            "max_payload_bytes": client.max_payload_bytes,
            "prefix": client.prefix,
        }, out)
    return True

children.on_failure_of_stored_run = fake
spec = ChildSpec(
    index=0, slot=0, app="t", url="redis://127.0.0.1:1", prefix="pfx", queues=("q",),
    lease_ms=5000, max_events_per_run=7, max_event_bytes_per_run=4096, max_payload_bytes=2048,
)
pid = children.fork_on_failure(spec, Registry(), "run-1")
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def test_on_failure_helper_client_gets_every_client_setting(tmp_path: Path) -> None:
    out = tmp_path / "client.json"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "0", done.stderr
    seen = json.loads(out.read_text())
    assert seen == {
        "run_id": "run-1",
        "max_events_per_run": 7,
        "max_event_bytes_per_run": 4096,
        "max_payload_bytes": 2048,
        "prefix": "pfx",
    }


def test_a_spec_carries_every_client_keyword_of_the_settings() -> None:
    from redflow_supervisor.child import spec_client_keywords

    s = load({"app": "a", "max_events_per_run": 9, "prefix": "p2"}, environ={})
    wanted = client_keywords(s)
    spec = ChildSpec(index=0, slot=0, app="a", queues=("q",), lease_ms=5000, **wanted)
    assert spec_client_keywords(spec) == wanted
    assert set(spec_client_keywords(spec)) == set(ClientKeywords.__required_keys__)
