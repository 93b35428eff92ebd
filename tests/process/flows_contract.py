"""Workflows of tests/process/test_contract_cli.py (the first of two --module)."""

from __future__ import annotations

from typing import Any

from redflow_mp import Context, Cron, define_workflow


@define_workflow(
    "c-ticker", queue="ca", cron=[Cron("* * * * * *", timezone="Europe/Berlin", input={"tick": 1})]
)
def ticker(ctx: Context[Any]) -> Any:
    return ctx.input


@define_workflow("c-work", queue="cb")
def work(ctx: Context[Any]) -> Any:
    return ctx.step.run("double", lambda n: n * 2, ctx.input)


@define_workflow("c-unserved", queue="cz")
def unserved(ctx: Context[Any]) -> None:
    return None
