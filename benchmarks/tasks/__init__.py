"""Modules the worker processes of each system import (one per system).

Each module reads its configuration from the environment the harness sets
(``BENCH_REDIS_URL``, ``BENCH_PREFIX``) and defines the same handlers:
``noop`` (INCR the counter), ``rt`` (return its argument, result stored),
``cpu`` (burn calibrated CPU), ``steps`` (20 steps), ``child`` and a fan-out
parent.
"""
