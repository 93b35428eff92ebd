"""Key names (SPEC §3): hash-tagged prefix, composite keys that never collide,
prefix validation."""

from __future__ import annotations

import pytest

from redflow_mp.keys import Keys, cron_key, step_workflow_key, validate_prefix

pytestmark = pytest.mark.timeout(10)


def test_every_key_is_hash_tagged_with_the_prefix() -> None:
    k = Keys("app:prod")
    names = [
        k.workflows,
        k.runs_created,
        k.cron_def,
        k.cron_next,
        k.lock_cron,
        k.queues,
        k.parked,
        k.supervisors,
        k.leases,
        k.due_queues,
        k.meta,
        k.runs_status("queued"),
        k.workflow("wf"),
        k.workflow_runs("wf"),
        k.wf_running("wf"),
        k.wf_waiting("wf"),
        k.run("r1"),
        k.run_steps("r1"),
        k.run_done("r1"),
        k.q_ready("q"),
        k.q_scheduled("q"),
        k.q_bell("q"),
        k.idempotency("wf", "key"),
        k.supervisor("s1"),
        k.worker_wake("tok"),
    ]
    for name in names:
        assert name.startswith("{app:prod}:"), name
    assert len(set(names)) == len(names)


def test_seed_key_names_match_spec() -> None:
    k = Keys("redflow")
    assert k.workflows == "{redflow}:workflows"
    assert k.workflow("resize") == "{redflow}:workflow:resize"
    assert k.workflow_runs("resize") == "{redflow}:workflow-runs:resize"
    assert k.runs_created == "{redflow}:runs:created"
    assert k.runs_status("running") == "{redflow}:runs:status:running"
    assert k.run("R") == "{redflow}:run:R"
    assert k.run_steps("R") == "{redflow}:run:R:steps"
    assert k.q_ready("media") == "{redflow}:q:media:ready"
    assert k.q_scheduled("media") == "{redflow}:q:media:scheduled"
    assert k.cron_def == "{redflow}:cron:def"
    assert k.cron_next == "{redflow}:cron:next"
    assert k.lock_cron == "{redflow}:lock:cron"
    assert k.idempotency("resize", "upload-1") == "{redflow}:idempo:6:resize:8:upload-1"


def test_v2_and_v1_key_names() -> None:
    k = Keys("redflow")
    assert k.leases == "{redflow}:leases"
    assert k.due_queues == "{redflow}:due-queues"
    assert k.meta == "{redflow}:meta"
    # keyspace v1 names, read only by the migration
    assert k.v1_lease("R") == "{redflow}:run:R:lease"
    assert k.v1_processing("media") == "{redflow}:q:media:processing"


def test_idempotency_key_parts_are_length_prefixed_so_pairs_never_collide() -> None:
    k = Keys("p")
    assert k.idempotency("a:1", "b") != k.idempotency("a", "1:b")
    assert k.idempotency("a", "b:c") != k.idempotency("a:b", "c")


def test_idempotency_length_counts_utf8_bytes_like_lua_string_len() -> None:
    # Lua's string.len counts bytes; keys.py must build the same name for
    # non-ASCII names (tests/lua checks the Lua side).
    k = Keys("p")
    assert k.idempotency("wé", "ключ") == "{p}:idempo:3:wé:8:ключ"


def test_step_workflow_key_is_deterministic_and_unambiguous() -> None:
    a = step_workflow_key("RUN1", "notify", "send-email")
    assert a == step_workflow_key("RUN1", "notify", "send-email")
    assert a.startswith("stepwf:")
    assert step_workflow_key("R", "a:b", "c") != step_workflow_key("R", "a", "b:c")
    assert step_workflow_key("R", "s", "c1") != step_workflow_key("R", "s", "c2")


def test_cron_key_is_deterministic_per_cron_id_and_fire_time() -> None:
    assert cron_key("wf:abc", 1000) == cron_key("wf:abc", 1000)
    assert cron_key("wf:abc", 1000) != cron_key("wf:abc", 2000)
    assert cron_key("wf:abc", 1000) != cron_key("wf:abd", 1000)


@pytest.mark.parametrize("bad", ["a{b", "a}b", "{x}"])
def test_prefix_with_braces_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="hash tag"):
        validate_prefix(bad)
    with pytest.raises(ValueError):
        Keys(bad)


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_prefix_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        validate_prefix(bad)


def test_prefix_must_be_a_str_of_bounded_length() -> None:
    with pytest.raises(TypeError):
        validate_prefix(b"redflow")
    with pytest.raises(TypeError):
        validate_prefix(None)
    with pytest.raises(ValueError, match="200"):
        validate_prefix("x" * 10_000)
    assert validate_prefix("app:prod:eu") == "app:prod:eu"


def test_the_workers_bell_cap_is_the_scripts() -> None:
    """A woken worker trims a padded bell to the cap the scripts' rings keep."""
    import re
    from importlib import resources

    from redflow_mp.worker import BELL_CAP

    lib = resources.files("redflow_mp").joinpath("lua/_lib.lua").read_text(encoding="utf-8")
    found = re.search(r"^local BELL_CAP = (\d+)$", lib, re.M)
    assert found is not None and int(found.group(1)) == BELL_CAP
