"""An id far longer than a run id (a request's 1 MB "id") is named cut in the
error of resume_run and retry_run, as in every other error: the whole string
was copied into the message (and from there into logs, the CLI's output and the
dashboard's notice)."""

from __future__ import annotations

import asyncio

import pytest

from redflow_mp import Client, RunNotResumableError
from redflow_mp.admin import retry_run
from redflow_mp.aio import create_async_client

pytestmark = pytest.mark.timeout(60)

HUGE = "x" * 1_000_000


def test_resume_and_retry_of_a_huge_id_name_it_cut(client: Client) -> None:
    with pytest.raises(RunNotResumableError) as resumed:
        client.resume_run(HUGE)
    assert len(str(resumed.value)) < 200
    assert "1000000 characters" in str(resumed.value)
    assert resumed.value.run_id == HUGE  # the attribute keeps the id given
    with pytest.raises(ValueError) as retried:
        retry_run(client, HUGE)
    assert len(str(retried.value)) < 200


def test_the_async_resume_of_a_huge_id_names_it_cut(redis_url: str, prefix: str) -> None:
    async def main() -> str:
        aclient = create_async_client(redis_url, prefix=prefix)
        try:
            with pytest.raises(RunNotResumableError) as resumed:
                await aclient.resume_run(HUGE)
            return str(resumed.value)
        finally:
            await aclient.aclose()

    assert len(asyncio.run(main())) < 200
