# syntax=docker/dockerfile:1.7
# The medrl image: every pipeline step, the PyTorchJob training pods and the vLLM judge run from it.
#   docker build --build-arg GIT_SHA="$(git rev-parse HEAD)" -t registry.example/medrl/medrl:0.1.0 .
# Layers go from slowest-changing to fastest: system Python, vLLM (own environment), medrl's locked
# dependencies (requirements.lock), flash-attn (built once in a CUDA devel stage), then medrl's wheel (built
# from src/, components/ and pipelines/ in a stage of its own: the image holds the package, not a checkout).
# torch 2.14.1 from PyPI is built for CUDA 13.0, hence the CUDA 13.0 base images.

ARG CUDA_VERSION=13.0.2
ARG UBUNTU_VERSION=ubuntu24.04
ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------- flash-attn wheel (needs nvcc: devel image)
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-${UBUNTU_VERSION} AS flash-attn
ARG PYTHON_VERSION
ARG FLASH_ATTN_VERSION=2.8.3.post2
ARG TORCH_CUDA_ARCH_LIST="8.0;9.0"
ARG MAX_JOBS=8
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" \
    "python${PYTHON_VERSION}-dev" git \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.lock /tmp/requirements.lock
RUN "python${PYTHON_VERSION}" -m venv /opt/build \
 && /opt/build/bin/pip install --no-deps -r /tmp/requirements.lock \
 && /opt/build/bin/pip install "setuptools>=69" wheel ninja psutil einops \
 && MAX_JOBS="${MAX_JOBS}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" FLASH_ATTENTION_FORCE_BUILD=TRUE \
    /opt/build/bin/pip wheel --no-build-isolation --no-deps -w /wheels "flash-attn==${FLASH_ATTN_VERSION}"

# ---------------------------------------------------------------- medrl wheel
FROM python:${PYTHON_VERSION}-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml setup.py README.md ./
COPY src src
COPY components components
COPY pipelines pipelines
RUN pip wheel --no-deps -w /wheels .

# ---------------------------------------------------------------- runtime
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-${UBUNTU_VERSION} AS runtime
ARG PYTHON_VERSION
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="medrl" \
      org.opencontainers.image.description="RL fine-tuning of medical vision-language models on Kubeflow" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${GIT_SHA}"
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" \
    libgl1 libglib2.0-0 \
 && apt-get purge -y software-properties-common gpg-agent && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

# vLLM (the judge server) pins its own torch (vllm 0.33.0: torch==2.14.0, transformers<5.21), which cannot share
# an environment with medrl's torch 2.14.1: it gets its own, used only as /opt/vllm/bin/vllm.
ARG VLLM_VERSION=0.33.0
RUN "python${PYTHON_VERSION}" -m venv /opt/vllm && /opt/vllm/bin/pip install "vllm==${VLLM_VERSION}" \
 && "python${PYTHON_VERSION}" -m venv /opt/medrl

# medrl's locked dependencies: this layer is rebuilt only when requirements.lock changes.
ENV VIRTUAL_ENV=/opt/medrl PATH=/opt/medrl/bin:${PATH}
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-deps -r /tmp/requirements.lock && rm /tmp/requirements.lock
COPY --from=flash-attn /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/flash_attn-*.whl && rm -rf /tmp/wheels

# medrl itself, its pipeline and components inside (medrl.pipelines, medrl.components); compiling checks them.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/medrl-*.whl && rm -rf /tmp/wheels \
 && medrl pipeline compile --out /tmp/study.yaml > /dev/null && rm /tmp/study.yaml

# Non-root, and nothing written outside /tmp (pods mount a writable /tmp; the root filesystem is read-only).
# (Ubuntu 24.04 images ship a user `ubuntu` with UID 1000: medrl takes that UID, which the manifests name.)
RUN (userdel ubuntu 2> /dev/null || true) && useradd --uid 1000 --user-group --no-create-home --home-dir /tmp medrl
# TOKENIZERS_PARALLELISM is not a secret, whatever its name suggests to the linter.
# hadolint ignore=DL3064
ENV HOME=/tmp HF_HOME=/tmp/hf XDG_CACHE_HOME=/tmp/cache TRITON_CACHE_DIR=/tmp/triton MPLCONFIGDIR=/tmp/mpl \
    HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false DS_BUILD_OPS=0
USER 1000:1000
WORKDIR /tmp
CMD ["medrl", "--help"]
