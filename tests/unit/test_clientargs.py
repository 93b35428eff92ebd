"""``clientargs``: the pure pieces the sync and async clients share answer as the
code each replaced (``RunOptions.of`` with the caller's keywords; the checks of
``create_client`` / ``create_async_client``, in their order)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from redflow_mp.clientargs import batch_options, check_client_args, run_options
from redflow_mp.options import NO_OPTIONS, RunOptions

CASES: list[dict[str, Any]] = [
    {},
    {"run_at": 1_900_000_000.0},
    {"run_at": datetime(2030, 1, 1, tzinfo=UTC), "priority": 3},
    {"queue_override": "q", "timeout": 2.5},
    {"idempotency_key": "k", "idempotency_ttl": 60.0},
    {"parent_run_id": "P"},
    {"parent_run_id": ""},
    {"priority": 0},
]
ORDER = (
    "run_at",
    "queue_override",
    "idempotency_key",
    "idempotency_ttl",
    "timeout",
    "priority",
    "parent_run_id",
)


@pytest.mark.parametrize("given", CASES)
def test_run_options_are_run_options_of(given: dict[str, Any]) -> None:
    assert run_options(*(given.get(k) for k in ORDER)) == RunOptions.of(**given)


@pytest.mark.parametrize("given", CASES)
def test_batch_options_are_run_options_of_without_key_or_parent(given: dict[str, Any]) -> None:
    kept = {k: v for k, v in given.items() if k not in ("idempotency_key", "parent_run_id")}
    got = batch_options(
        kept.get("run_at"),
        kept.get("queue_override"),
        kept.get("idempotency_ttl"),
        kept.get("timeout"),
        kept.get("priority"),
    )
    assert got == RunOptions.of(**kept)


def test_no_option_is_the_shared_instance() -> None:
    assert run_options(None, None, None, None, None, None, None) is NO_OPTIONS
    assert batch_options(None, None, None, None, None) is NO_OPTIONS


@pytest.mark.parametrize(
    ("args", "error", "text"),
    [
        (("u", None, False, 0, True), ValueError, "shards must be from 1 to"),
        (("u", None, False, 1, 1), TypeError, "verify_shards must be a bool"),
        (("u", object(), False, 1, True), ValueError, "pass either url or redis, not both"),
        ((None, None, 1, 1, True), TypeError, "redis_functions must be a bool"),
        # the first failing check speaks: shards before verify_shards before the rest
        (("u", object(), 1, 0, 1), ValueError, "shards must be from 1 to"),
        (("u", object(), 1, 1, 1), TypeError, "verify_shards must be a bool"),
    ],
)
def test_client_args_checks_in_order(
    args: tuple[Any, Any, Any, Any, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        check_client_args(*args)
    check_client_args("u", None, False, 1, True)


@pytest.mark.parametrize("registry", ["jobs", {}, object()], ids=["str", "dict", "object"])
def test_a_registry_that_is_not_one_is_a_type_error_at_creation(registry: object) -> None:
    # create_client(registry="jobs") was accepted; the first run_by_name raised
    # AttributeError: 'str' object has no attribute 'get' (a dict was taken as an
    # empty registry: every name "neither registered nor synced").
    from redflow_mp import create_client
    from redflow_mp.aio import create_async_client

    url = "redis://127.0.0.1:1/0"  # never reached: the check comes first
    with pytest.raises(TypeError, match="registry"):
        create_client(url, registry=registry, default=False, verify_shards=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="registry"):
        create_async_client(url, registry=registry, default=False)  # type: ignore[arg-type]
