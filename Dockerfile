# syntax=docker/dockerfile:1
# One image for every latam process; the command picks the role:
#   docker run IMAGE            -> HTTP API on $PORT (Cloud Run sets it; default 8080)
#   docker run IMAGE worker     -> broker consumer (health and metrics on $PORT or 9464)
#   docker run IMAGE migrate    -> database migrations, then exit

# By digest: a rebuilt tag cannot change what ships (Renovate/Dependabot bump tag and digest).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Every runtime dependency ships a binary wheel, so no compiler is needed even here.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies from the hash-checked runtime lock (the versions pip-audit checks); the
# package is built by hash-checked build tools in a virtualenv of their own (no build
# isolation, so pip fetches nothing unpinned), then installed alone: nothing is resolved
# afresh, and no build tool ships.
COPY requirements/runtime.txt requirements/build.txt ./requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/runtime.txt \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /tmp/wheels . \
    && pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && pip check \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="latam" \
      org.opencontainers.image.description="Publish/subscribe ingestion pipeline: API and worker" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LATAM_HOST=0.0.0.0 \
    LATAM_LOG_FORMAT=json \
    LATAM_DATA_DIR=/tmp/latam
RUN groupadd --system --gid 10001 latam \
    && useradd --system --uid 10001 --gid latam --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin latam
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 scripts/docker-entrypoint.sh /usr/local/bin/latam-entrypoint
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 9464
# The API answers on $PORT (default 8080), the worker on $LATAM_WORKER_METRICS_PORT (9464).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as r\nports = {os.environ.get('PORT', '8080'), os.environ.get('LATAM_WORKER_METRICS_PORT', '9464')}\nfor port in ports:\n    try:\n        r.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)\n        sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)"]
ENTRYPOINT ["latam-entrypoint"]
CMD ["api"]
