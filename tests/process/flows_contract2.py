"""Workflows of tests/process/test_contract_cli.py (the second of two --module)."""

from __future__ import annotations

from typing import Any

from redflow_mp import Context, define_workflow


@define_workflow("c-second", queue="ca")
def second(ctx: Context[Any]) -> str:
    return f"second:{ctx.input}"
