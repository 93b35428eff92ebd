"""An app's live registration after the Redis clock went back (NTP setting right a
clock that ran ahead, a failover to a server whose clock is behind). Redis expires
a key at an absolute time on its own clock: a registration renewed while the clock
was a day ahead outlived its supervisor by a day, and workers that do not load its
workflows put their runs back (about once a second) for that day instead of
failing them. The test writes the expiry as such a renewal left it (the clock is
faked the way tests/integration/test_cron_clock.py fakes it)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.sync import STALE_WORKFLOW_GRACE_MS, loaded_live, registration_digest
from redflow_supervisor.duties.registration import RegistrationDuty

pytestmark = pytest.mark.timeout(60)

DAY_MS = 86_400_000


def test_a_registration_renewed_at_a_clock_a_day_ahead_lapses_within_the_grace(
    raw: redis.Redis, client: Client
) -> None:
    reg = Registry()

    @define_workflow("gpu-job", registry=reg)
    def gpu_job(ctx: Context[Any]) -> None:
        return None

    client.sync_registry(reg, app="etl")
    RegistrationDuty(client, lambda: reg, lambda: "etl").tick(0.0)
    key = client.keys.app_reg(registration_digest("etl", ["gpu-job"]))
    # its last renewal, at a clock a day ahead; then its supervisor died
    raw.pexpireat(key, client.server_time_ms() + DAY_MS + STALE_WORKFLOW_GRACE_MS)
    assert loaded_live(client, "gpu-job")  # (its supervisor may be alive: it renews)
    left = raw.pttl(key)
    assert 0 < left <= STALE_WORKFLOW_GRACE_MS, (
        f"the registration of a supervisor gone lasts {left / 1000:.0f} s more"
    )


def test_a_live_registration_is_left_as_its_renewal_set_it(
    raw: redis.Redis, client: Client
) -> None:
    reg = Registry()

    @define_workflow("cpu-job", registry=reg)
    def cpu_job(ctx: Context[Any]) -> None:
        return None

    client.sync_registry(reg, app="etl")
    RegistrationDuty(client, lambda: reg, lambda: "etl").tick(0.0)
    key = client.keys.app_reg(registration_digest("etl", ["cpu-job"]))
    raw.persist(key)  # (no expiry: not a time from a clock ahead)
    assert loaded_live(client, "cpu-job")
    assert raw.pttl(key) == -1
