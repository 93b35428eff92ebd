"""Load-testing harness: redflow-mp side by side with Celery, RQ, Dramatiq, arq and Huey.

Run ``python -m benchmarks run --help``; the method is described in
``benchmarks/README.md``.
"""
