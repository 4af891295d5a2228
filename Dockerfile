# syntax=docker/dockerfile:1
#
# One image for the lrsearch API and the CPU worker, plus a `gpu` target for GPU workers.
#
#   docker build -t lrsearch .                      # API + CPU worker (default target: runtime)
#   docker build --target gpu -t lrsearch:gpu .     # GPU worker (TensorFlow's CUDA image)
#
#   docker run -p 8000:8000 -e LRSEARCH_DATABASE_URL=... lrsearch            # lrsearch api
#   docker run -e LRSEARCH_DATABASE_URL=... lrsearch worker                  # a CPU worker
#   docker run --gpus all -e LRSEARCH_DATABASE_URL=... lrsearch:gpu          # a GPU worker
#
# Dependencies come from pyproject.toml and are installed in their own layer, before the
# source is copied, so editing code rebuilds only the small last layers.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG TF_GPU_IMAGE=tensorflow/tensorflow:2.21.0-gpu

# --- requirements: pyproject's [project].dependencies as a requirements file ----------------
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; print(*deps, sep='\n')" > /requirements.txt

# --- builder: a venv with the dependencies, then lrsearch itself ----------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip install --upgrade pip && pip install -r /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY search ./search
COPY service ./service
RUN pip install --no-deps . && rm -rf build *.egg-info

# --- gpu: a worker on TensorFlow's official CUDA image --------------------------------------
# TensorFlow (with its CUDA libraries) comes from the base image; the venv sees it through
# --system-site-packages, so pip installs only the rest. search/gpu.py turns on memory growth,
# so nothing in lrsearch changes for a GPU.
FROM ${TF_GPU_IMAGE} AS gpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    LRSEARCH_DATA_DIR=/data
RUN python3 -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=requirements /requirements.txt /tmp/requirements.txt
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

# --- runtime (default target): the API and the CPU worker -----------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="lrsearch" \
      org.opencontainers.image.description="Find the best learning-rate strategy for a Keras model"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
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
CMD ["api", "--host", "0.0.0.0"]
