# syntax=docker/dockerfile:1.7
# medrl's three images, one Dockerfile (`--target`; the default is the last stage, `train`):
#   train  the PyTorchJob/TrainJob training pods and the evaluate step: requirements-gpu.lock (torch 2.13.0 built for
#          CUDA 13.0, transformers, TRL, vLLM in the same environment for GRPO rollouts, DeepSpeed) and flash-attn.
#   slim   the pipeline steps that only orchestrate (init, prep, arms_at_level, train's launcher task, report,
#          cleanup): medrl's core on CPU torch (requirements-slim.lock), no CUDA base, no flash-attn, no vLLM.
#   judge  the judge server: vLLM's OpenAI-compatible server in /opt/vllm, nothing of medrl.
#   docker build --build-arg GIT_SHA="$(git rev-parse HEAD)" --target train -t registry.example/medrl/medrl:0.1.0 .
#   docker build --build-arg GIT_SHA="$(git rev-parse HEAD)" --target slim -t registry.example/medrl/medrl-slim:0.1.0 .
#   docker build --build-arg GIT_SHA="$(git rev-parse HEAD)" --target judge -t registry.example/medrl/medrl-judge:0.1.0 .
# Layers go from slowest-changing to fastest: system Python, the locked dependencies, flash-attn (built once in a
# CUDA devel stage), then medrl's wheel (built from src/, components/ and pipelines/ in a stage of its own).
# The CUDA 13.0 base images match the cu130 torch wheels; they need an NVIDIA driver >= 580 on the GPU nodes.

ARG CUDA_VERSION=13.0.2
ARG UBUNTU_VERSION=ubuntu24.04
ARG PYTHON_VERSION=3.11
# The base images, as build arguments: a site that mirrors them (or a hospital build machine with no registry
# access) points these at its own copies. Defaults are the upstream images.
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:${CUDA_VERSION}-cudnn-devel-${UBUNTU_VERSION}
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-${UBUNTU_VERSION}
ARG PYTHON_IMAGE=python:${PYTHON_VERSION}-slim

# ---------------------------------------------------------------- flash-attn wheel (needs nvcc: devel image)
FROM ${CUDA_DEVEL_IMAGE} AS flash-attn
ARG PYTHON_VERSION
ARG FLASH_ATTN_VERSION=2.8.3.post2
# The GPU architectures flash-attn's kernels are compiled for. flash-attn 2.8's setup.py reads
# FLASH_ATTN_CUDA_ARCHS (its own default "80;90;100;120"), not TORCH_CUDA_ARCH_LIST: 80 = A100 only, each added
# architecture multiplies build time and image size. H100 nodes as well: --build-arg FLASH_ATTN_CUDA_ARCHS="80;90".
ARG FLASH_ATTN_CUDA_ARCHS="80"
# Parallel compile jobs x nvcc threads: each nvcc process of flash-attn's kernels takes several GB, so the builder's
# memory bounds this (4 x 2 fits a 32 GB builder).
ARG MAX_JOBS=4
ARG NVCC_THREADS=2
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" \
    "python${PYTHON_VERSION}-dev" git \
 && rm -rf /var/lib/apt/lists/*
# Built against the training image's torch: the GPU lock, as a constraints file, pins torch and all it pulls in.
COPY requirements-gpu.lock /tmp/requirements-gpu.lock
# hadolint ignore=DL3013
RUN "python${PYTHON_VERSION}" -m venv /opt/build \
 && /opt/build/bin/pip install -c /tmp/requirements-gpu.lock torch \
 && /opt/build/bin/pip install "setuptools>=69" wheel ninja psutil einops \
 && MAX_JOBS="${MAX_JOBS}" NVCC_THREADS="${NVCC_THREADS}" FLASH_ATTN_CUDA_ARCHS="${FLASH_ATTN_CUDA_ARCHS}" \
    FLASH_ATTENTION_FORCE_BUILD=TRUE \
    /opt/build/bin/pip wheel --no-build-isolation --no-deps -w /wheels "flash-attn==${FLASH_ATTN_VERSION}"

# ---------------------------------------------------------------- medrl wheel
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml setup.py README.md ./
COPY src src
COPY components components
COPY pipelines pipelines
RUN pip wheel --no-deps -w /wheels .

# ---------------------------------------------------------------- CUDA runtime with Python (train and judge)
FROM ${CUDA_RUNTIME_IMAGE} AS cuda-python
ARG PYTHON_VERSION
# A C compiler, the C library's headers and Python.h: Triton compiles a small C helper against Python.h the first
# time a kernel launches, and vLLM (rollouts, evaluation, the judge server) launches one at engine start.
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" \
    "python${PYTHON_VERSION}-dev" gcc libc6-dev libgl1 libglib2.0-0 \
 && apt-get purge -y software-properties-common gpg-agent && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*
# Non-root, and nothing written outside /tmp (pods mount a writable /tmp; the root filesystem is read-only).
# (Ubuntu 24.04 images ship a user `ubuntu` with UID 1000: medrl takes that UID, which the manifests name.)
RUN (userdel ubuntu 2> /dev/null || true) && useradd --uid 1000 --user-group --no-create-home --home-dir /tmp medrl

# ---------------------------------------------------------------- judge: vLLM serving
FROM cuda-python AS judge
ARG PYTHON_VERSION
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="medrl-judge" \
      org.opencontainers.image.description="vLLM OpenAI-compatible server for medrl's LLM judge" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${GIT_SHA}"
# vLLM pins its own torch; the judge needs nothing else, so it gets the newest vLLM (pyproject's `judge` extra).
ARG VLLM_VERSION=0.33.0
RUN "python${PYTHON_VERSION}" -m venv /opt/vllm && /opt/vllm/bin/pip install "vllm==${VLLM_VERSION}"
ENV HOME=/tmp HF_HOME=/tmp/hf XDG_CACHE_HOME=/tmp/cache TRITON_CACHE_DIR=/tmp/triton \
    HF_HUB_DISABLE_TELEMETRY=1 VLLM_NO_USAGE_STATS=1 PATH=/opt/vllm/bin:${PATH}
USER 1000:1000
WORKDIR /tmp
CMD ["/opt/vllm/bin/vllm", "--help"]

# ---------------------------------------------------------------- slim: the steps that only orchestrate
FROM ${PYTHON_IMAGE} AS slim
ARG GIT_SHA=unknown
# Where torch's CPU builds come from (a site's mirror of it works the same).
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
LABEL org.opencontainers.image.title="medrl-slim" \
      org.opencontainers.image.description="medrl's pipeline steps that only orchestrate (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${GIT_SHA}"
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DS_BUILD_OPS=0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/medrl
ENV VIRTUAL_ENV=/opt/medrl PATH=/opt/medrl/bin:${PATH}
# medrl's locked dependencies without CUDA: this layer is rebuilt only when requirements-slim.lock changes.
COPY requirements-slim.lock /tmp/requirements-slim.lock
RUN pip install --no-deps --extra-index-url "${TORCH_CPU_INDEX}" -r /tmp/requirements-slim.lock \
 && rm /tmp/requirements-slim.lock
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/medrl-*.whl && rm -rf /tmp/wheels \
 && medrl pipeline compile --out /tmp/study.yaml > /dev/null && rm /tmp/study.yaml
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp medrl
# TOKENIZERS_PARALLELISM is not a secret, whatever its name suggests to the linter.
# hadolint ignore=DL3064
ENV HOME=/tmp HF_HOME=/tmp/hf XDG_CACHE_HOME=/tmp/cache MPLCONFIGDIR=/tmp/mpl \
    HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
USER 1000:1000
WORKDIR /tmp
CMD ["medrl", "--help"]

# ---------------------------------------------------------------- train: training pods and evaluation (default)
FROM cuda-python AS train
ARG PYTHON_VERSION
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="medrl" \
      org.opencontainers.image.description="RL fine-tuning of medical vision-language models on Kubeflow" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${GIT_SHA}"
ENV DS_BUILD_OPS=0
RUN "python${PYTHON_VERSION}" -m venv /opt/medrl
ENV VIRTUAL_ENV=/opt/medrl PATH=/opt/medrl/bin:${PATH}
# The GPU environment (torch, transformers, TRL, vLLM, DeepSpeed resolved together): rebuilt only when
# requirements-gpu.lock changes. flash-attn, pinned there too, comes from the build stage instead.
COPY requirements-gpu.lock /tmp/requirements-gpu.lock
RUN grep -v '^flash-attn==' /tmp/requirements-gpu.lock > /tmp/requirements.txt \
 && pip install --no-deps -r /tmp/requirements.txt && rm /tmp/requirements-gpu.lock /tmp/requirements.txt
COPY --from=flash-attn /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/flash_attn-*.whl && rm -rf /tmp/wheels

# medrl itself, its pipeline and components inside (medrl.pipelines, medrl.components); compiling checks them.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/medrl-*.whl && rm -rf /tmp/wheels \
 && medrl pipeline compile --out /tmp/study.yaml > /dev/null && rm /tmp/study.yaml

# TOKENIZERS_PARALLELISM is not a secret, whatever its name suggests to the linter.
# hadolint ignore=DL3064
ENV HOME=/tmp HF_HOME=/tmp/hf XDG_CACHE_HOME=/tmp/cache TRITON_CACHE_DIR=/tmp/triton MPLCONFIGDIR=/tmp/mpl \
    HF_HUB_DISABLE_TELEMETRY=1 VLLM_NO_USAGE_STATS=1 VLLM_CACHE_ROOT=/tmp/vllm TOKENIZERS_PARALLELISM=false
USER 1000:1000
WORKDIR /tmp
CMD ["medrl", "--help"]
