# medrl's three images, one Dockerfile (`--target`; the default is the last stage, `train`). No `# syntax=` line:
# Docker would pull that frontend from Docker Hub, and the built-in one reads everything here (RUN --mount).
#   train  the PyTorchJob/TrainJob training pods and the evaluate step: requirements-gpu.lock (torch 2.13.0 built for
#          CUDA 13.0, transformers, TRL, vLLM in the same environment for GRPO rollouts, DeepSpeed) and flash-attn.
#   slim   the pipeline steps that only orchestrate (init, prep, arms_at_level, train's launcher task, report,
#          cleanup): medrl's core on CPU torch (requirements-slim.lock), no CUDA base, no flash-attn, no vLLM.
#   judge  the judge server: vLLM's OpenAI-compatible server in /opt/vllm, nothing of medrl.
#   train-cpu  the train image's layout on requirements.lock (torch from PyPI, run on CPU; no vLLM, no flash-attn,
#          no CUDA base): what the tests build and run here, where there is no GPU.
#   docker build --build-arg GIT_SHA="$(git rev-parse HEAD)" --target train -t registry.example/medrl/medrl:0.1.0 .
#   docker build --build-arg GIT_SHA="$(git rev-parse HEAD)" --target slim -t registry.example/medrl/medrl-slim:0.1.0 .
#   docker build --build-arg GIT_SHA="$(git rev-parse HEAD)" --target judge -t registry.example/medrl/medrl-judge:0.1.0 .
# (`make images` runs these with docker or podman.) Air-gapped: `make wheelhouse` fills wheelhouse/<image>/ with every
# locked wheel on a machine with PyPI; --build-arg WHEELHOUSE=1 then installs only from it (pip --no-index). Each
# pip step bind-mounts wheelhouse/ for its own run, so the wheels never end up in a layer.
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
# Non-empty: pip installs from wheelhouse/<image>/ only (--no-index), never from an index.
ARG WHEELHOUSE=""
# 0: the train image without flash-attn (a builder that cannot compile it); its self-check reports it as not built.
ARG FLASH_ATTN=1

# ---------------------------------------------------------------- flash-attn wheel (needs nvcc: devel image)
FROM ${CUDA_DEVEL_IMAGE} AS flash-attn
ARG PYTHON_VERSION
ARG FLASH_ATTN_VERSION=2.8.3.post2
ARG WHEELHOUSE
ARG FLASH_ATTN
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
# The deadsnakes PPA only where the base's own archive lacks this Python (Ubuntu 24.04 has 3.12; Debian 12 has 3.11).
# hadolint ignore=DL3008
RUN mkdir -p /wheels && if [ "${FLASH_ATTN}" = 0 ]; then exit 0; fi \
 && apt-get update \
 && if ! apt-cache show "python${PYTHON_VERSION}-dev" > /dev/null 2>&1; then \
      apt-get install -y --no-install-recommends software-properties-common gpg-agent \
      && add-apt-repository -y ppa:deadsnakes/ppa; fi \
 && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" \
    "python${PYTHON_VERSION}-dev" git \
 && rm -rf /var/lib/apt/lists/*
# Built against the training image's torch: the GPU lock, as a constraints file, pins torch and all it pulls in.
COPY requirements-gpu.lock /tmp/requirements-gpu.lock
# hadolint ignore=DL3013,SC2086
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    if [ "${FLASH_ATTN}" = 0 ]; then exit 0; fi \
 && "python${PYTHON_VERSION}" -m venv /opt/build \
 && /opt/build/bin/pip install ${WHEELHOUSE:+--no-index --find-links /wheelhouse/train} \
    -c /tmp/requirements-gpu.lock torch "setuptools>=69" wheel ninja psutil einops \
 && MAX_JOBS="${MAX_JOBS}" NVCC_THREADS="${NVCC_THREADS}" FLASH_ATTN_CUDA_ARCHS="${FLASH_ATTN_CUDA_ARCHS}" \
    FLASH_ATTENTION_FORCE_BUILD=TRUE \
    /opt/build/bin/pip wheel --no-build-isolation --no-deps ${WHEELHOUSE:+--no-index --find-links /wheelhouse/train} \
    -w /wheels "flash-attn==${FLASH_ATTN_VERSION}"

# ---------------------------------------------------------------- medrl wheel
FROM ${PYTHON_IMAGE} AS wheel
ARG PYTHON_VERSION
ARG WHEELHOUSE
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The build backend at the locks' setuptools, from the slim wheelhouse when given (no build isolation: that would
# reach for an index). `python3.X`: python:3.11-slim has `python`, a Debian-built base only `python3.11`.
COPY requirements-slim.lock /tmp/requirements-slim.lock
# hadolint ignore=SC2086
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    "python${PYTHON_VERSION}" -m venv /opt/build \
 && /opt/build/bin/pip install ${WHEELHOUSE:+--no-index --find-links /wheelhouse/slim} \
    "$(grep '^setuptools==' /tmp/requirements-slim.lock)"
WORKDIR /build
COPY pyproject.toml setup.py README.md ./
COPY src src
COPY components components
COPY pipelines pipelines
RUN /opt/build/bin/pip wheel --no-build-isolation --no-deps -w /wheels .

# ---------------------------------------------------------------- CUDA runtime with Python (train and judge)
FROM ${CUDA_RUNTIME_IMAGE} AS cuda-python
ARG PYTHON_VERSION
# A C compiler, the C library's headers and Python.h: Triton compiles a small C helper against Python.h the first
# time a kernel launches, and vLLM (rollouts, evaluation, the judge server) launches one at engine start.
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The deadsnakes PPA only where the base's own archive lacks this Python (Ubuntu 24.04 has 3.12; Debian 12 has 3.11).
# hadolint ignore=DL3008
RUN apt-get update \
 && if ! apt-cache show "python${PYTHON_VERSION}-dev" > /dev/null 2>&1; then \
      apt-get install -y --no-install-recommends software-properties-common gpg-agent \
      && add-apt-repository -y ppa:deadsnakes/ppa; fi \
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
# vLLM pins its own torch; the judge needs nothing else, so it gets the newest vLLM (pyproject's `judge` extra).
ARG VLLM_VERSION=0.33.0
ARG WHEELHOUSE
# hadolint ignore=SC2086
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    "python${PYTHON_VERSION}" -m venv /opt/vllm \
 && /opt/vllm/bin/pip install ${WHEELHOUSE:+--no-index --find-links /wheelhouse/judge} "vllm==${VLLM_VERSION}"
# MEDRL_IMAGE: which self-check applies (medrl's image_check.py, run with this Python: there is no medrl here).
ENV HOME=/tmp HF_HOME=/tmp/hf XDG_CACHE_HOME=/tmp/cache TRITON_CACHE_DIR=/tmp/triton \
    HF_HUB_DISABLE_TELEMETRY=1 VLLM_NO_USAGE_STATS=1 PATH=/opt/vllm/bin:${PATH} MEDRL_IMAGE=judge
# Last: GIT_SHA changes with every commit and would otherwise invalidate every layer below it.
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="medrl-judge" \
      org.opencontainers.image.description="vLLM OpenAI-compatible server for medrl's LLM judge" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${GIT_SHA}"
USER 1000:1000
WORKDIR /tmp
CMD ["/opt/vllm/bin/vllm", "--help"]

# ---------------------------------------------------------------- slim: the steps that only orchestrate
FROM ${PYTHON_IMAGE} AS slim
ARG PYTHON_VERSION
ARG WHEELHOUSE
# Where torch's CPU builds come from (a site's mirror of it works the same).
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DS_BUILD_OPS=0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN "python${PYTHON_VERSION}" -m venv /opt/medrl
ENV VIRTUAL_ENV=/opt/medrl PATH=/opt/medrl/bin:${PATH}
# medrl's locked dependencies without CUDA: this layer is rebuilt only when requirements-slim.lock changes. The lock
# stays in the image: the self-check compares what is installed with it.
COPY requirements-slim.lock /opt/medrl/requirements.lock
# hadolint ignore=SC2086
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    pip install --no-deps ${WHEELHOUSE:+--no-index --find-links /wheelhouse/slim} \
    --extra-index-url "${TORCH_CPU_INDEX}" -r /opt/medrl/requirements.lock
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/medrl-*.whl && rm -rf /tmp/wheels \
 && medrl pipeline compile --out /tmp/study.yaml > /dev/null && rm /tmp/study.yaml
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp medrl
# TOKENIZERS_PARALLELISM is not a secret, whatever its name suggests to the linter. MEDRL_IMAGE: which self-check
# applies (`medrl doctor --image slim`).
# hadolint ignore=DL3064
ENV HOME=/tmp HF_HOME=/tmp/hf XDG_CACHE_HOME=/tmp/cache MPLCONFIGDIR=/tmp/mpl \
    HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false MEDRL_IMAGE=slim
# Last: GIT_SHA changes with every commit and would otherwise invalidate every layer below it.
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="medrl-slim" \
      org.opencontainers.image.description="medrl's pipeline steps that only orchestrate (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${GIT_SHA}"
USER 1000:1000
WORKDIR /tmp
CMD ["medrl", "--help"]

# ---------------------------------------------------------------- train-cpu: the train image's layout, CPU lock
FROM ${PYTHON_IMAGE} AS train-cpu
ARG PYTHON_VERSION
ARG WHEELHOUSE
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DS_BUILD_OPS=0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN "python${PYTHON_VERSION}" -m venv /opt/medrl
ENV VIRTUAL_ENV=/opt/medrl PATH=/opt/medrl/bin:${PATH}
COPY requirements.lock /opt/medrl/requirements.lock
# hadolint ignore=SC2086
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    pip install --no-deps ${WHEELHOUSE:+--no-index --find-links /wheelhouse/train-cpu} -r /opt/medrl/requirements.lock
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/medrl-*.whl && rm -rf /tmp/wheels \
 && medrl pipeline compile --out /tmp/study.yaml > /dev/null && rm /tmp/study.yaml
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp medrl
# hadolint ignore=DL3064
ENV HOME=/tmp HF_HOME=/tmp/hf XDG_CACHE_HOME=/tmp/cache MPLCONFIGDIR=/tmp/mpl \
    HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false MEDRL_IMAGE=train-cpu
# Last: GIT_SHA changes with every commit and would otherwise invalidate every layer below it.
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="medrl-train-cpu" \
      org.opencontainers.image.description="medrl's training image on CPU (requirements.lock; no vLLM, no flash-attn)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${GIT_SHA}"
USER 1000:1000
WORKDIR /tmp
CMD ["medrl", "--help"]

# ---------------------------------------------------------------- train: training pods and evaluation (default)
FROM cuda-python AS train
ARG PYTHON_VERSION
ARG WHEELHOUSE
ARG FLASH_ATTN
ENV DS_BUILD_OPS=0
RUN "python${PYTHON_VERSION}" -m venv /opt/medrl
ENV VIRTUAL_ENV=/opt/medrl PATH=/opt/medrl/bin:${PATH}
# The GPU environment (torch, transformers, TRL, vLLM, DeepSpeed resolved together): rebuilt only when
# requirements-gpu.lock changes. flash-attn, pinned there too, comes from the build stage instead.
COPY requirements-gpu.lock /opt/medrl/requirements.lock
# hadolint ignore=SC2086
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    grep -v '^flash-attn==' /opt/medrl/requirements.lock > /tmp/requirements.txt \
 && pip install --no-deps ${WHEELHOUSE:+--no-index --find-links /wheelhouse/train} -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY --from=flash-attn /wheels /tmp/wheels
# FLASH_ATTN=0: the image's lock leaves flash-attn out, so its self-check reports it as not built.
RUN if [ "${FLASH_ATTN}" = 0 ]; then sed -i '/^flash-attn==/d' /opt/medrl/requirements.lock; \
    else pip install --no-deps /tmp/wheels/flash_attn-*.whl; fi && rm -rf /tmp/wheels

# medrl itself, its pipeline and components inside (medrl.pipelines, medrl.components); compiling checks them.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/medrl-*.whl && rm -rf /tmp/wheels \
 && medrl pipeline compile --out /tmp/study.yaml > /dev/null && rm /tmp/study.yaml

# TOKENIZERS_PARALLELISM is not a secret, whatever its name suggests to the linter.
# hadolint ignore=DL3064
ENV HOME=/tmp HF_HOME=/tmp/hf XDG_CACHE_HOME=/tmp/cache TRITON_CACHE_DIR=/tmp/triton MPLCONFIGDIR=/tmp/mpl \
    HF_HUB_DISABLE_TELEMETRY=1 VLLM_NO_USAGE_STATS=1 VLLM_CACHE_ROOT=/tmp/vllm TOKENIZERS_PARALLELISM=false \
    MEDRL_IMAGE=train MEDRL_FLASH_ATTN=${FLASH_ATTN}
# Last: GIT_SHA changes with every commit and would otherwise invalidate every layer below it.
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="medrl" \
      org.opencontainers.image.description="RL fine-tuning of medical vision-language models on Kubeflow" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${GIT_SHA}"
USER 1000:1000
WORKDIR /tmp
CMD ["medrl", "--help"]
