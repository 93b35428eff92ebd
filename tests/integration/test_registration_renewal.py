"""The registration duty: a running supervisor keeps its app's registration of
the workflows it loads live, so that the sync of another host of the same app
(other modules) does not withdraw them; at a cost per tick that does not grow
with the number of workflows, and a lost registration comes back at the next
tick. Ages are simulated by rewriting the sync times (``_age``)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.sync import STALE_WORKFLOW_GRACE_MS, registration_digest
from redflow_supervisor.duties.registration import RegistrationDuty
from tests.helpers import command_counts, texts

pytestmark = pytest.mark.timeout(60)


def _handler(ctx: Context[Any]) -> None:
    return None


def _age(raw: redis.Redis, client: Client, name: str, ms: int) -> None:
    """Make every sync of ``name`` look ``ms`` older."""
    key = client.keys.workflow(name)
    raw.hset(key, "updatedAt", int(raw.hget(key, "updatedAt") or 0) - ms)
    apps_key = client.keys.wf_apps(name)
    for app, at in raw.hgetall(apps_key).items():
        raw.hset(apps_key, app, int(at) - ms)


def _registry(*names: str) -> Registry:
    reg = Registry()
    for name in names:
        define_workflow(name, registry=reg)(_handler)
    return reg


def test_a_renewal_costs_two_commands_whatever_the_number_of_workflows(
    raw: redis.Redis, client: Client
) -> None:
    """Each tick read every workflow's registration and wrote it again: 2,001
    commands every 10 s for 1,000 workflows, per supervisor (20 supervisors:
    4,000 commands/s on an idle Redis). Now a PEXPIRE and a SADD."""
    reg = _registry(*(f"wf-{i}" for i in range(1000)))
    client.sync_registry(reg, app="etl")
    duty = RegistrationDuty(client, lambda: reg, lambda: "etl")
    duty.tick(0.0)
    counts = command_counts(raw, lambda: duty.tick(10.0))
    assert sum(counts.values()) <= 2, counts


def test_a_live_registration_keeps_what_another_host_of_the_app_does_not_load(
    raw: redis.Redis, client: Client
) -> None:
    cpu, gpu = _registry("cpu-job"), _registry("gpu-job")
    client.sync_registry(cpu, app="etl")
    duty = RegistrationDuty(client, lambda: cpu, lambda: "etl")
    duty.tick(0.0)
    _age(raw, client, "cpu-job", 10 * STALE_WORKFLOW_GRACE_MS)  # started long ago
    client.sync_registry(gpu, app="etl")  # the GPU host starts
    assert client.get_workflow_meta("cpu-job") is not None, "withdrawn while served"
    assert client.get_workflow_meta("gpu-job") is not None


def test_a_registration_no_supervisor_renews_any_more_is_withdrawn(
    raw: redis.Redis, client: Client
) -> None:
    cpu, gpu = _registry("cpu-job"), _registry("gpu-job")
    client.sync_registry(cpu, app="etl")
    RegistrationDuty(client, lambda: cpu, lambda: "etl").tick(0.0)
    digest = registration_digest("etl", ["cpu-job"])
    raw.delete(client.keys.app_reg(digest))  # as its expiry 30 s after the last renewal
    _age(raw, client, "cpu-job", 10 * STALE_WORKFLOW_GRACE_MS)
    client.sync_registry(gpu, app="etl")
    assert client.get_workflow_meta("cpu-job") is None
    assert not raw.exists(client.keys.app_live("etl")), "the gone registration is pruned"
    # another app's live registration never keeps this app's
    RegistrationDuty(client, lambda: cpu, lambda: "web").tick(0.0)
    client.sync_registry(cpu, app="etl")
    _age(raw, client, "cpu-job", 10 * STALE_WORKFLOW_GRACE_MS)
    client.sync_registry(gpu, app="etl")
    assert client.get_workflow_meta("cpu-job") is None


def test_a_lost_registration_comes_back_at_the_next_tick(raw: redis.Redis, client: Client) -> None:
    names = [f"wf-{i}" for i in range(1500)]
    reg = _registry(*names)
    client.sync_registry(reg, app="etl")
    duty = RegistrationDuty(client, lambda: reg, lambda: "etl")
    duty.tick(0.0)
    key = client.keys.app_reg(registration_digest("etl", names))
    assert 0 < raw.pttl(key) <= STALE_WORKFLOW_GRACE_MS
    raw.delete(key, client.keys.app_live("etl"))  # deleted, expired during an outage, FLUSHALL
    duty.tick(10.0)
    assert sorted(texts(raw.smembers(key))) == sorted(names)
    assert 0 < raw.pttl(key) <= STALE_WORKFLOW_GRACE_MS
    assert texts(raw.smembers(client.keys.app_live("etl"))) == [registration_digest("etl", names)]
    assert duty.written == 2


def test_a_reload_renews_the_new_registry(raw: redis.Redis, client: Client) -> None:
    current = [_registry("a", "b")]
    duty = RegistrationDuty(client, lambda: current[0], lambda: "etl")
    duty.tick(0.0)
    current[0] = _registry("a", "c")  # HUP: the modules changed
    duty.tick(10.0)
    key = client.keys.app_reg(registration_digest("etl", ["a", "c"]))
    assert sorted(texts(raw.smembers(key))) == ["a", "c"]


def test_a_live_registration_key_of_another_type_withdraws_nothing(
    raw: redis.Redis, client: Client
) -> None:
    cpu, gpu = _registry("cpu-job"), _registry("gpu-job")
    client.sync_registry(cpu, app="etl")
    _age(raw, client, "cpu-job", 10 * STALE_WORKFLOW_GRACE_MS)
    raw.set(client.keys.app_live("etl"), "not a redflow key")
    client.sync_registry(gpu, app="etl")  # no WRONGTYPE out of the sync
    assert client.get_workflow_meta("cpu-job") is not None


def test_a_workflow_a_deploy_dropped_is_withdrawn_within_minutes_with_its_cron(
    raw: redis.Redis, client: Client
) -> None:
    """A deploy that drops a workflow restarts each host within the grace of the
    previous process's last renewal: the new process's start-up sync keeps the
    workflow (its registration looks live), and nothing looked again, so its
    metadata and its cron entry stayed and the cron fired runs of a workflow no
    one had until the next deploy. The running supervisor now withdraws stale
    registrations once a minute."""
    from redflow_mp import Cron

    old = _registry("kept")
    define_workflow("dropped", registry=old, cron=[Cron("* * * * *", id="every-minute")])(_handler)
    client.sync_registry(old, app="etl")
    old_duty = RegistrationDuty(client, lambda: old, lambda: "etl")
    old_duty.tick(0.0)  # the previous process renewed just before it stopped
    new = _registry("kept")
    client.sync_registry(new, app="etl")  # the new process's start: within the grace
    assert raw.sismember(client.keys.workflows, "dropped")
    duty = RegistrationDuty(client, lambda: new, lambda: "etl")
    duty.tick(0.0)
    # the previous process is gone: its live registration expires, the sync ages
    raw.delete(client.keys.app_reg(registration_digest("etl", ["dropped", "kept"])))
    _age(raw, client, "dropped", STALE_WORKFLOW_GRACE_MS + 1)
    duty.tick(10.0)
    assert raw.sismember(client.keys.workflows, "dropped")  # not before its minute
    duty.tick(60.0)
    assert not raw.sismember(client.keys.workflows, "dropped")
    assert not raw.exists(client.keys.workflow("dropped"))
    assert raw.zscore(client.keys.cron_next, "every-minute") is None
    assert raw.sismember(client.keys.workflows, "kept")


def test_two_hosts_whose_names_join_alike_keep_registrations_of_their_own(
    raw: redis.Redis, client: Client
) -> None:
    """The digest joined the names with NUL, which a workflow name may hold: a host
    loading ``a`` and ``b`` and one loading ``a\\0b`` (same app) shared one
    registration record, the first one's. The second host's renewals only kept it
    alive, so its workflows were listed by no live registration and the other
    host's sync withdrew them (metadata and cron entries) while it ran them."""
    assert registration_digest("etl", ["a", "b"]) != registration_digest("etl", ["a\0b"])
    assert registration_digest("etl\0a", ["b"]) != registration_digest("etl", ["a", "b"])
    odd, plain = _registry("a\0b"), _registry("a", "b")
    client.sync_registry(odd, app="etl")
    RegistrationDuty(client, lambda: odd, lambda: "etl").tick(0.0)  # the first host
    client.sync_registry(plain, app="etl")
    RegistrationDuty(client, lambda: plain, lambda: "etl").tick(0.0)  # the second host
    for name in ("a", "b"):
        _age(raw, client, name, 10 * STALE_WORKFLOW_GRACE_MS)
    client.sync_registry(odd, app="etl")  # the first host's next sync (a HUP)
    assert client.get_workflow_meta("a") is not None, "withdrawn while served"
    assert client.get_workflow_meta("b") is not None, "withdrawn while served"
