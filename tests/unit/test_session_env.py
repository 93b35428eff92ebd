"""The ``redflow`` command's connection options read from the environment."""

from __future__ import annotations

import argparse

import pytest

from supervisor.ops.session import UsageError, connection_options


def _ns() -> argparse.Namespace:
    return argparse.Namespace(cluster=False, sentinel_master=None, shards=None)


@pytest.mark.parametrize("raw", ["1", "true", "YES", " on "])
def test_redflow_cluster_true_values(raw: str) -> None:
    assert connection_options(_ns(), {"REDFLOW_CLUSTER": raw})["cluster"] is True


@pytest.mark.parametrize("raw", ["", "0", "false", "No", "off"])
def test_redflow_cluster_false_values(raw: str) -> None:
    assert connection_options(_ns(), {"REDFLOW_CLUSTER": raw})["cluster"] is False


@pytest.mark.parametrize("raw", ["maybe", "tru", "2"])
def test_redflow_cluster_junk_is_a_usage_error(raw: str) -> None:
    # A typo used to be read as false: the command then talked to one node of a
    # cluster as if it were a single server and failed later with MOVED replies.
    with pytest.raises(UsageError, match="REDFLOW_CLUSTER"):
        connection_options(_ns(), {"REDFLOW_CLUSTER": raw})


def test_the_cluster_flag_wins_over_the_environment() -> None:
    ns = _ns()
    ns.cluster = True
    assert connection_options(ns, {"REDFLOW_CLUSTER": "false"})["cluster"] is True
