"""Workflow definitions: option validation, duplicates, names, the default
registry, where ``Workflow.run`` gets its client."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from redflow_mp import (
    Context,
    Cron,
    DuplicateWorkflowError,
    RedflowError,
    Registry,
    Retries,
    Workflow,
    define_workflow,
    get_default_registry,
)
from redflow_mp.client import set_default_client

pytestmark = pytest.mark.timeout(10)


class Input(msgspec.Struct):
    url: str


def _handler(ctx: Context[Any]) -> None:
    return None


def test_define_workflow_registers_with_options(registry: Registry) -> None:
    @define_workflow(
        "resize",
        queue="media",
        max_concurrency=8,
        schema=Input,
        retries=Retries(max_attempts=3),
        cron=[Cron("*/15 * * * *", timezone="Europe/Berlin", input={"url": "x"})],
        registry=registry,
    )
    def resize(ctx: Context[Input]) -> dict[str, str]:
        return {"url": ctx.input.url}

    assert isinstance(resize, Workflow)
    assert registry.get("resize") is resize
    assert "resize" in registry and len(registry) == 1
    assert (resize.name, resize.queue, resize.max_concurrency) == ("resize", "media", 8)
    assert resize.schema is Input
    assert resize.retries.max_attempts == 3
    assert resize.cron[0].timezone == "Europe/Berlin"
    assert not resize.is_async
    assert registry.queues() == ["media"]
    assert resize not in get_default_registry().list()


def test_async_handlers_are_detected(registry: Registry) -> None:
    @define_workflow("a", registry=registry)
    async def a(ctx: Context[Any]) -> int:
        return 1

    assert a.is_async


def test_duplicate_names_in_one_registry_fail_at_definition(registry: Registry) -> None:
    define_workflow("dup", registry=registry)(_handler)
    with pytest.raises(DuplicateWorkflowError, match="dup"):
        define_workflow("dup", registry=registry)(_handler)
    assert isinstance(DuplicateWorkflowError("x"), ValueError)
    # the same name in another registry is fine
    other = Registry()
    define_workflow("dup", registry=other)(_handler)


def test_bare_decorator_takes_the_function_name(registry: Registry) -> None:
    default = get_default_registry()
    before = len(default)

    def my_flow(ctx: Context[Any]) -> None:
        return None

    wf = define_workflow(my_flow)
    try:
        assert wf.name == "my_flow"
        assert default.get("my_flow") is wf
        assert len(default) == before + 1
    finally:
        default._workflows.pop("my_flow", None)  # keep the default registry clean


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"queue": ""}, ValueError),
        ({"queue": 5}, TypeError),
        ({"max_concurrency": 0}, ValueError),
        ({"max_concurrency": "2"}, TypeError),
        ({"max_concurrency": True}, TypeError),
        ({"schema": "Input"}, TypeError),
        ({"cron": Cron("* * * * *")}, TypeError),
        ({"cron": ["* * * * *"]}, TypeError),
        ({"retries": {"max_attempts": 3}}, TypeError),
        ({"on_failure": "alert"}, TypeError),
        ({"timeout": 0}, ValueError),
        ({"timeout": "10"}, TypeError),
        ({"registry": {}}, TypeError),
    ],
)
def test_bad_options_fail_at_the_decorator_line(
    registry: Registry, kwargs: dict[str, Any], exc: type[Exception]
) -> None:
    kwargs.setdefault("registry", registry)
    with pytest.raises(exc):
        define_workflow("wf", **kwargs)
    assert "wf" not in registry


@pytest.mark.parametrize(("name", "exc"), [("", ValueError), ("  ", ValueError), (None, TypeError)])
def test_bad_workflow_names(registry: Registry, name: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        define_workflow(name, registry=registry)


def test_ten_kilobyte_name_is_rejected_clearly(registry: Registry) -> None:
    with pytest.raises(ValueError, match=r"10240 characters long; the limit is 512"):
        define_workflow("n" * 10_240, registry=registry)


def test_handler_must_be_callable(registry: Registry) -> None:
    with pytest.raises(TypeError, match="callable"):
        define_workflow("x", registry=registry)("not callable")  # type: ignore[call-overload]


def test_frozen_registry_refuses_new_workflows(registry: Registry) -> None:
    registry.freeze()
    assert registry.frozen
    with pytest.raises(RuntimeError, match="frozen"):
        define_workflow("late", registry=registry)(_handler)


def test_run_without_any_client_is_a_clear_error(registry: Registry) -> None:
    set_default_client(None)
    wf = define_workflow("orphan", registry=registry)(_handler)
    with pytest.raises(RedflowError, match="create_client"):
        wf.run({"x": 1})
    with pytest.raises(TypeError, match="Client"):
        wf.run({"x": 1}, client="redis://localhost")  # type: ignore[arg-type]


def test_name_may_be_passed_by_keyword(registry: Registry) -> None:
    @define_workflow(name="by-keyword", queue="kw", registry=registry)
    def handler(ctx: Context[Any]) -> None:
        return None

    assert handler.name == "by-keyword" and handler.queue == "kw"
    assert registry.get("by-keyword") is handler
