# syntax=docker/dockerfile:1
#
# The lrsearch API image (default target: runtime, from `.[api]`: no TensorFlow), a CPU worker
# image (`worker`, from `.[worker]`) and a GPU worker image (`gpu`, on TensorFlow's CUDA image).
#
#   docker build -t lrsearch .                          # API, migrations, dashboard, client
#   docker build --target worker -t lrsearch:worker .   # CPU worker (TensorFlow + Keras)
#   docker build --target gpu -t lrsearch:gpu .         # GPU worker (TensorFlow's CUDA image)
#
#   docker run -p 8000:8000 -e LRSEARCH_DATABASE_URL=... -e LRSEARCH_AUTH=true lrsearch  # api
#   docker run -e LRSEARCH_DATABASE_URL=... lrsearch:worker                  # a CPU worker
#   docker run --gpus all -e LRSEARCH_DATABASE_URL=... lrsearch:gpu          # a GPU worker
#
# Dependencies come from pyproject.toml (base + one extra) and are installed in their own
# layer, before the source is copied, so editing code rebuilds only the small last layers.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG TF_GPU_IMAGE=tensorflow/tensorflow:2.21.0-gpu

# --- requirements: pyproject's base dependencies plus one extra, as requirements files ------
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import tomllib; \
    project = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
    base, extras = project['dependencies'], project['optional-dependencies']; \
    [open(f'/requirements-{e}.txt', 'w').write('\n'.join(base + extras[e])) for e in ('api', 'worker')]"

# --- builder: the API's venv (.[api], no TensorFlow): the dependencies, then lrsearch -------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=requirements /requirements-api.txt /tmp/requirements.txt
RUN pip install --upgrade pip && pip install -r /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY search ./search
COPY service ./service
RUN pip install --no-deps . && rm -rf build *.egg-info

# --- worker-builder: a CPU worker's venv (.[worker]: TensorFlow and Keras), the same way ----
FROM ${PYTHON_IMAGE} AS worker-builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=requirements /requirements-worker.txt /tmp/requirements.txt
RUN pip install --upgrade pip && pip install -r /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY search ./search
COPY service ./service
RUN pip install --no-deps . && rm -rf build *.egg-info

# --- worker: a CPU worker -------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS worker
LABEL org.opencontainers.image.title="lrsearch-worker" \
      org.opencontainers.image.description="lrsearch's training worker (CPU)"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    LRSEARCH_DATA_DIR=/data
RUN groupadd --system --gid 10001 lrsearch \
    && useradd --system --uid 10001 --gid lrsearch --create-home --home-dir /home/lrsearch lrsearch \
    && mkdir -p /data && chown lrsearch:lrsearch /data
COPY --from=worker-builder /opt/venv /opt/venv
WORKDIR /home/lrsearch
USER lrsearch
ENTRYPOINT ["lrsearch"]
CMD ["worker"]

# --- gpu: a worker on TensorFlow's official CUDA image --------------------------------------
# TensorFlow (with its CUDA libraries) comes from the base image; the venv sees it through
# --system-site-packages, so pip installs only the rest of .[worker]. search/training/devices.py
# turns on memory growth, so nothing in lrsearch changes for a GPU.
FROM ${TF_GPU_IMAGE} AS gpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    LRSEARCH_DATA_DIR=/data
RUN python3 -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=requirements /requirements-worker.txt /tmp/requirements.txt
RUN pip install --upgrade pip && pip install -r /tmp/requirements.txt \
    && python -c "import tensorflow as tf; print('tensorflow', tf.__version__)"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY search ./search
COPY service ./service
RUN pip install --no-deps . && cd / && rm -rf /src
RUN groupadd --system --gid 10001 lrsearch \
    && useradd --system --uid 10001 --gid lrsearch --create-home --home-dir /home/lrsearch lrsearch \
    && mkdir -p /data && chown lrsearch:lrsearch /data
WORKDIR /home/lrsearch
USER lrsearch
ENTRYPOINT ["lrsearch"]
CMD ["worker"]

# --- runtime (default target): the API, migrations, the dashboard (no TensorFlow) -----------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="lrsearch" \
      org.opencontainers.image.description="Find the best learning-rate strategy for a Keras model"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LRSEARCH_DATA_DIR=/data
RUN groupadd --system --gid 10001 lrsearch \
    && useradd --system --uid 10001 --gid lrsearch --create-home --home-dir /home/lrsearch lrsearch \
    && mkdir -p /data && chown lrsearch:lrsearch /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /home/lrsearch
USER lrsearch
EXPOSE 8000
# No curl in the slim image: python's urllib; any non-2xx or connection error exits non-zero.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LRSEARCH_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["lrsearch"]
# On 0.0.0.0 the API refuses to start with auth off: set LRSEARCH_AUTH=true (or, knowingly,
# LRSEARCH_ALLOW_INSECURE=true).
CMD ["api", "--host", "0.0.0.0"]
