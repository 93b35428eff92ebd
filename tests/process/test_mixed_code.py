"""Two code versions on one prefix (a rolling deploy; two apps sharing a queue):
a workflow the new code adds, on a queue the old code serves too. A worker of
the old code claimed its runs and failed them (``UnknownWorkflowError``, not
retried) while a running supervisor on the new code could run them: work lost
at every deploy that adds a workflow. Such a run is put back now, for a second,
when a running supervisor loads the workflow; with none, it fails as before."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from redflow_mp import Client
from redflow_mp.errors import RunFailedError
from tests.process.conftest import Supervisor

pytestmark = pytest.mark.process

NEW = ["tests.process.flows", "tests.process.flows_newcode"]


@pytest.mark.parametrize("app", ["etl", "etl-next"])  # one app rolling, or two apps
def test_runs_of_a_workflow_the_old_code_lacks_wait_for_the_new_code(
    supervisor: Callable[..., Supervisor], client: Client, app: str
) -> None:
    old = supervisor(procs=2, app="etl")  # tests.process.flows only
    new = supervisor(procs=1, app=app, modules=NEW)
    old.wait_workers(2)
    new.wait_workers(1)
    new_pids = {p.pid for p in new.workers()}
    handles = [client.run_by_name("added-later", None) for _ in range(12)]
    pids = [h.result(timeout=60) for h in handles]  # raised RunFailedError before
    assert set(pids) <= new_pids
    for h in handles:
        state = client.get_run(h.id)
        assert state is not None and state.attempt == 1  # no attempt was spent


def test_a_run_of_a_workflow_no_running_supervisor_loads_still_fails(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    old = supervisor(procs=1, app="etl")
    old.wait_workers(1)
    handle = client.run_by_name("added-later", None, queue_override="p")  # nobody has it
    with pytest.raises(RunFailedError, match="not registered in this worker"):
        handle.result(timeout=20)
