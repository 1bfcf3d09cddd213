# The image: wheels built from the lock file in one stage, installed into a venv in the next.
# Build with `docker build -t credits-service .`; scripts/container-smoke.sh builds it with buildah
# from a local Debian base and prebuilt wheels (BASE=..., WHEELS=wheels).
# Pinned to a patch release and a Debian release; pin its digest (@sha256:...) at the registry
# the image is built from.
ARG BASE=python:3.11.7-slim-bookworm

FROM ${BASE} AS build
# A folder of the build context holding every wheel already (the project's and those of
# requirements/runtime.txt), for builds where pip cannot reach the package index.
ARG WHEELS=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN if [ -n "$WHEELS" ]; then \
        mkdir /wheels && cp "$WHEELS"/*.whl /wheels/; \
    else \
        python3 -m venv /opt/build \
        && /opt/build/bin/pip install --require-hashes -r requirements/build.txt \
        && /opt/build/bin/pip wheel --require-hashes --wheel-dir /wheels -r requirements/runtime.txt \
        && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .; \
    fi

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=build /wheels /tmp/wheels
COPY requirements/runtime.txt /tmp/runtime.txt
# Only the locked wheels, each checked against its hash, then the project without dependencies.
# The instance folder is where Flask keeps the default SQLite database (DATABASE_URL unset).
RUN python3 -m venv /opt/venv \
    && pip install --no-index --find-links /tmp/wheels --require-hashes -r /tmp/runtime.txt \
    && pip install --no-index --no-deps /tmp/wheels/credits_service-*.whl \
    && pip check \
    && rm -rf /tmp/wheels /tmp/runtime.txt \
    && useradd --no-log-init --no-create-home --uid 10001 --user-group credits \
    && install -d -o 10001 -g 10001 /opt/venv/var/credits_service-instance

WORKDIR /app
COPY app.py boot.sh gunicorn.conf.py ./
COPY migrations ./migrations

USER 10001:10001
ENV PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', timeout=2)"]
CMD ["/app/boot.sh"]
