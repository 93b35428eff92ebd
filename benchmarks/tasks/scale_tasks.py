"""Workflows for ``benchmarks.scale_supervisor`` (imported by ``redflow-supervisor
--module``): every handler counts its execution per run id in the hash
``sc:exec`` (a count above 1 is a run executed twice) and does nothing else.

``SCALE_URL``: where the counts go (the benchmark's private server).
``SCALE_QUEUES``: that many extra workflows ``q-<i>``, each on queue ``q-<i>``.
``SCALE_CRONS``: that many cron workflows ``c-<i>`` on queue ``cron``, each firing
every 15 s (a 6-field expression: seconds last, as croniter reads it).
"""

from __future__ import annotations

import os
from typing import Any

import redis

from redflow_mp import Context, Cron, define_workflow

_conn: list[redis.Redis] = []


def _count(ctx: Context[Any]) -> None:
    if not _conn:  # opened in the child, after the fork
        _conn.append(redis.Redis.from_url(os.environ["SCALE_URL"]))
    _conn[0].hincrby("sc:exec", ctx.run.id, 1)


def _handler(ctx: Context[Any]) -> None:
    _count(ctx)


@define_workflow("scale-noop", queue="scale", max_concurrency=1_000_000)
def noop(ctx: Context[Any]) -> None:
    _count(ctx)


@define_workflow("scale-one", queue="scale")  # the default max_concurrency: 1
def one(ctx: Context[Any]) -> None:
    _count(ctx)


for _i in range(int(os.environ.get("SCALE_QUEUES", "0"))):
    define_workflow(f"q-{_i}", queue=f"q-{_i}", max_concurrency=1000)(_handler)

for _i in range(int(os.environ.get("SCALE_CRONS", "0"))):
    define_workflow(f"c-{_i}", queue="cron", cron=[Cron("* * * * * */15")])(_handler)
