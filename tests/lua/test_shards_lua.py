"""The shard helpers of ``lua/_lib.lua`` agree with ``keys.py`` / ``shards.py``."""

from __future__ import annotations

from importlib import resources

import redis

from redflow_mp import Client
from redflow_mp.keys import Keys
from redflow_mp.shards import shard_index_of_run, shard_tags


def _lib() -> str:
    return resources.files("redflow_mp").joinpath("lua/_lib.lua").read_text(encoding="utf-8")


def test_kicked_key_and_id_shard_match(raw: redis.Redis, client: Client) -> None:
    tag = shard_tags(client.prefix, 3)[2]
    k = Keys(client.prefix, tag)
    body = """
local out = { k_kicked(ARGV[1], ARGV[2]) }
for i = 3, #ARGV do out[#out + 1] = id_shard(ARGV[i]) or 'none' end
return out
"""
    ids = ["01J0000000000000000000000A", "01J0000000000000000000000A~2", "X~17", "a~b"]
    got = [x.decode() for x in raw.eval(_lib() + body, 0, tag, "R~2", *ids)]
    assert got[0] == k.run_kicked("R~2")
    assert got[1:] == ["none", "2", "17", "none"]
    assert shard_index_of_run(ids[1], 3) == int(got[2])
