# syntax=docker/dockerfile:1
# redflow-mp: the supervisor, the `redflow` CLI and the dashboard in one small image.
#
# Build (from the repository root; EXTRAS=otel,... adds optional extras):
#   docker build -t redflow-mp .
# Run the supervisor on your workflow modules (mounted, or COPY them into /app in an
# image FROM this one); the password travels in REDFLOW_URL at run time, never here:
#   docker run --rm --env-file redflow.env -v "$PWD/jobs:/app/jobs:ro" \
#       -e REDFLOW_APP=etl -e REDFLOW_MODULES=jobs redflow-mp
# The CLI and the dashboard, from the same image:
#   docker run --rm --env-file redflow.env --entrypoint redflow redflow-mp queues
#   docker run --rm --env-file redflow.env -e RF_DASHBOARD_TOKEN -p 127.0.0.1:8321:8321 \
#       --entrypoint redflow redflow-mp dashboard --host 0.0.0.0 --port 8321
# deploy/docker-compose.yml puts Redis (append-only file), a supervisor and the
# dashboard together.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md LICENSE /src/
COPY redflow_mp /src/redflow_mp
COPY supervisor /src/supervisor
# The import name of supervisor/ (a symlink to it in the repository, see pyproject.toml):
# the build installs the package from this path.
COPY redflow_supervisor /src/redflow_supervisor
# A regular (not editable) install into a venv that the final stage copies whole:
# no compiler, pip cache or sources end up there (the dependencies ship wheels).
RUN python -m venv /opt/redflow \
    && /opt/redflow/bin/pip install "/src${EXTRAS:+[$EXTRAS]}"

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="redflow-mp" \
      org.opencontainers.image.description="Durable multi-step workflows on Redis, run by a multiprocess supervisor" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 redflow \
    && useradd --system --uid 10001 --gid redflow --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin redflow
COPY --from=build /opt/redflow /opt/redflow
WORKDIR /app
# Defaults only; REDFLOW_APP and REDFLOW_MODULES have none (the supervisor refuses
# to start without them). Every REDFLOW_* name must be a setting (conf/redflow.toml).
ENV PATH=/opt/redflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REDFLOW_URL=redis://redis:6379/0 \
    REDFLOW_LOG_FORMAT=json \
    REDFLOW_METRICS_PORT=9464 \
    REDFLOW_METRICS_HOST=0.0.0.0
USER 10001:10001
EXPOSE 9464
# TERM drains: running handlers get graceful_timeout (30 s) to finish, so give
# `docker stop` more than that (docker stop -t 45; compose: stop_grace_period).
STOPSIGNAL SIGTERM
# The arbiter answers /metrics from its own loop: a reply proves the loop runs.
# REDFLOW_METRICS_PORT=0 turns metrics off, and this check with it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('REDFLOW_METRICS_PORT', '9464'); port == '0' or urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=4).read()"]
ENTRYPOINT ["redflow-supervisor"]
