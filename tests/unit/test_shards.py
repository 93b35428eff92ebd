"""The shard math (shards.py): tags, slot windows, placement, run ids."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from redis.crc import key_slot

from redflow_mp.keys import Keys, validate_prefix
from redflow_mp.shards import (
    MAX_SHARDS,
    check_shards,
    run_id_for_shard,
    shard_index_of_run,
    shard_index_of_workflow,
    shard_tag,
    shard_tags,
    slot_of_tag,
    window_bounds,
    window_of_slot,
)

PREFIXES = ["redflow", "app:prod:eu", "x", "a-very-long-prefix" * 5, "ünïcode", "t1", "t2"]


def test_one_shard_is_todays_tag() -> None:
    for prefix in PREFIXES:
        assert shard_tags(prefix, 1) == (Keys(prefix).tag,)
        assert shard_tag(prefix, 1, 0) == "{" + prefix + "}"


@pytest.mark.parametrize("shards", [2, 3, 4, 5, 7, 16, 64])
def test_each_shard_slot_lies_in_its_own_window(shards: int) -> None:
    for prefix in PREFIXES + [f"p{i}" for i in range(40)]:
        tags = shard_tags(prefix, shards)
        assert len(tags) == shards == len(set(tags))
        assert tags[0] == "{" + prefix + "}"
        w0 = window_of_slot(key_slot(prefix.encode()), shards)
        seen = []
        for k, tag in enumerate(tags):
            slot = slot_of_tag(tag)
            assert slot == key_slot(f"{tag}:run:x".encode())  # the tag decides the slot
            window = window_of_slot(slot, shards)
            assert window == (w0 + k) % shards, (prefix, k, slot)
            if k:
                lo, hi = window_bounds(window, shards)
                assert lo <= slot <= hi
                assert window * 16384 // shards < slot < (window + 1) * 16384 // shards - 1
            seen.append(window)
        assert sorted(seen) == list(range(shards))
        for tag in tags[1:]:
            base, sep, salt = tag[1:-1].rpartition("~")
            assert base == prefix and sep == "~" and salt.isdigit()


def test_salt_is_the_smallest_that_fits() -> None:
    prefix, shards = "redflow", 4
    w0 = window_of_slot(key_slot(prefix.encode()), shards)
    for k, tag in enumerate(shard_tags(prefix, shards)[1:], start=1):
        salt = int(tag[1:-1].rpartition("~")[2])
        lo, hi = window_bounds((w0 + k) % shards, shards)
        for smaller in range(salt):
            assert not lo <= key_slot(f"{prefix}~{smaller}".encode()) <= hi


def _redis_cli_split(masters: int) -> list[tuple[int, int]]:
    """The slot ranges ``redis-cli --cluster create`` gives ``masters`` masters."""
    per = 16384 / masters
    ranges, first, cursor = [], 0, 0.0
    for i in range(masters):
        last = round(cursor + per - 1)
        if last > 16383 or i == masters - 1:
            last = 16383
        ranges.append((first, last))
        first = last + 1
        cursor += per
    return ranges


@pytest.mark.parametrize("masters", [2, 3, 5, 6])
def test_n_shards_on_an_evenly_split_cluster_use_n_masters(masters: int) -> None:
    ranges = _redis_cli_split(masters)
    for prefix in PREFIXES + [f"app{i}" for i in range(200)]:
        slot0 = key_slot(prefix.encode())
        edge = any(abs(slot0 - b) <= 1 for lo, hi in ranges for b in (lo, hi))
        owners = set()
        for tag in shard_tags(prefix, masters):
            slot = slot_of_tag(tag)
            owners.add(next(i for i, (lo, hi) in enumerate(ranges) if lo <= slot <= hi))
        assert len(owners) == masters or edge, prefix


def test_workflow_placement_is_crc32_mod_n() -> None:
    for name in ["a", "resize", "ünïcode", "x" * 300]:
        assert shard_index_of_workflow(name, 1) == 0
        for n in (2, 3, 7, 1024):
            assert shard_index_of_workflow(name, n) == zlib.crc32(name.encode()) % n
    spread = {shard_index_of_workflow(f"wf{i}", 3) for i in range(30)}
    assert spread == {0, 1, 2}


def test_run_ids_carry_their_shard() -> None:
    ulid = "01J0000000000000000000000A"
    assert run_id_for_shard(ulid, 0, 1) == ulid
    assert run_id_for_shard(ulid, 2, 3) == ulid + "~2"
    assert run_id_for_shard(ulid, 0, 3) == ulid + "~0"
    assert shard_index_of_run(ulid, 3) == 0
    assert shard_index_of_run(ulid + "~2", 3) == 2
    assert shard_index_of_run(ulid + "~0", 1) == 0
    # a run keeps its id when re-sharded to fewer shards: ~k lives in shard k % N
    assert shard_index_of_run(ulid + "~3", 3) == 0
    assert shard_index_of_run(ulid + "~5", 3) == 2
    assert shard_index_of_run(ulid + "~2", 1) == 0
    assert shard_index_of_run(ulid + "~1023", 2) == 1
    for bad in (
        ulid + "~1024",
        ulid + "~99999999999",
        ulid + "~x",
        ulid + "~",
        ulid + "~01",
        ulid + "~-1",
        ulid + "~²",
    ):
        with pytest.raises(ValueError, match=r"run id|shard"):
            shard_index_of_run(bad, 3)


def test_check_shards() -> None:
    assert check_shards(1) == 1
    assert check_shards(MAX_SHARDS) == MAX_SHARDS
    for bad in (0, -1, MAX_SHARDS + 1):
        with pytest.raises(ValueError, match="shards must be from 1 to 1024"):
            check_shards(bad)
    for wrong in (True, 2.0, "3", None):
        with pytest.raises(TypeError, match="shards must be an int"):
            check_shards(wrong)


def test_tilde_in_a_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match=r"must not contain .~.*shard"):
        validate_prefix("app~1")
    with pytest.raises(ValueError, match="must not contain"):
        validate_prefix("a{b}")


def test_keys_of_a_shard_use_its_tag() -> None:
    tags = shard_tags("redflow", 3)
    keys = Keys("redflow", tags[2])
    assert keys.run("R") == tags[2] + ":run:R"
    assert keys.q_ready("default") == tags[2] + ":q:default:ready"
    assert keys.prefix == "redflow"


def test_1024_shards_are_computed() -> None:
    tags = shard_tags("big", 1024)
    assert len(set(tags)) == 1024
    assert len({window_of_slot(slot_of_tag(t), 1024) for t in tags}) == 1024


def test_supervisor_setting_shards(tmp_path: Any) -> None:
    from redflow_mp.errors import ConfigError
    from redflow_supervisor.settings import load

    assert load({}, environ={}).shards == 1
    conf = tmp_path / "r.toml"
    conf.write_text("shards = 3\n")
    assert load({}, config_path=str(conf), environ={}).shards == 3
    assert load({}, environ={"REDFLOW_SHARDS": "4"}).shards == 4
    assert load({"shards": "5"}, environ={"REDFLOW_SHARDS": "4"}).shards == 5
    for bad in ("0", "1025"):
        with pytest.raises(ConfigError, match=r"setting shards .* at most 1024"):
            load({"shards": bad}, environ={})
