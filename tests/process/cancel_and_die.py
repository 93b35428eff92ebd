"""Test helper process: ``python -m tests.process.cancel_and_die URL PREFIX RUN_ID``
cancels a run with ``Client.cancel_run`` and stops for good between the
parent's ``cancel_run`` script and the cancels of its children (the cascade):
it prints ``parent-canceled`` there and sleeps, for the test to SIGKILL it, as
a client process killed at that moment (only the cascade step is replaced;
Redis and the cancel script are the real ones)."""

from __future__ import annotations

import sys
import time

from redflow_mp import create_client
from redflow_mp.runs import Runs


def _stall(self: Runs, run_id: str, reason: str | None = None, limit: int | None = None) -> int:
    print("parent-canceled", flush=True)
    time.sleep(3600)
    return 0


def main() -> None:
    url, prefix, run_id = sys.argv[1:4]
    client = create_client(url, prefix=prefix, default=False)
    Runs.cancel_children = _stall  # type: ignore[method-assign]
    client.cancel_run(run_id, reason="killed canceller")


if __name__ == "__main__":
    main()
