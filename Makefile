# medrl: `make demo` and `make test` are all a newcomer needs; both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install system-packages demo test test-fast bench lint compile clean lock images wheelhouse standin-base

install: $(STAMP)

# The integration tests start real Prometheus, Pushgateway and headless Chromium, and build and run the images with
# podman (as root: runc, CNI plugins and iptables for build networking, debootstrap for the stand-in base image).
# As root with apt-get they are installed here; otherwise one line says what to run.
SYSTEM_PACKAGES := prometheus prometheus-pushgateway chromium podman runc containernetworking-plugins iptables debootstrap
system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || printf "%s " $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages the integration tests start: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "the integration tests need Debian packages; run as root: apt-get install $$missing"; \
	fi

# The locks are constraints: pip installs exactly the versions they pin (never the newest release), so what a fresh
# clone tests is what the locks say.
$(STAMP): pyproject.toml setup.py requirements.lock requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet 'pip==26.3'
	$(PY) -m pip install --quiet -c requirements.lock -c requirements-dev.lock -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/medrl demo --out medrl-runs

test: install system-packages
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

bench: install
	$(PY) -m pytest tests/benchmarks -s -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check src components pipelines tests containers
	$(VENV)/bin/ruff format --check src components pipelines tests containers
	$(VENV)/bin/mypy src components pipelines containers/build.py
	$(VENV)/bin/yamllint -s k8s

compile: install
	$(VENV)/bin/medrl pipeline compile --out pipelines/compiled/study.yaml

# The locks, each written by `uv pip compile` (the dev extra pins uv) for the images' target, linux x86_64 CPython
# 3.11. uv keeps a lock's existing pins unless its inputs force a change; `make lock UPGRADE=--upgrade` (or
# UPGRADE='--upgrade-package transformers') takes newer releases. tests/unit/tools/test_lock.py checks, offline,
# that each lock's header is its line here and that it holds what pyproject.toml and the .in files ask for.
UV        := $(VENV)/bin/uv --quiet
UPGRADE   ?=
LOCK_FOR  := --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(UPGRADE)
# Where torch's CPU build lies for the slim lock (a folder of wheels, or a page of links such as PyTorch's
# https://download.pytorch.org/whl/torch/); uv leaves it out of the lock's header.
TORCH_CPU_WHEELS ?= /opt/wheels
lock lock-gpu: export UV_SYSTEM_CERTS := 1
lock: install
	$(UV) pip compile pyproject.toml $(LOCK_FOR) -o requirements.lock
	$(UV) pip compile pyproject.toml --extra dev -c requirements.lock $(LOCK_FOR) -o requirements-dev.lock
	@# The slim lock starts from the full lock's pins (uv keeps the output file's pins where they still fit), so it
	@# departs from requirements.lock only where requirements-slim.in says.
	cp requirements.lock requirements-slim.lock && $(UV) pip compile pyproject.toml --override requirements-slim.in --find-links $(TORCH_CPU_WHEELS) $(LOCK_FOR) -o requirements-slim.lock

clean:
	rm -rf medrl-runs .pytest_cache

# Container images: docker or podman, whichever is installed (ENGINE=podman picks one). The bases default to the
# upstream images; set PYTHON_IMAGE, CUDA_RUNTIME_IMAGE, CUDA_DEVEL_IMAGE to a mirror's (or the stand-in's), e.g.
#   make standin-base && make images TARGETS=slim,train-cpu PYTHON_IMAGE=localhost/medrl-standin-python:3.11
# WHEELHOUSE=1: pip installs only from wheelhouse/ (`make wheelhouse` first), no index. Podman reads its settings from
# containers/containers.conf (runc, cgroupfs, ulimits within the host's).
export CONTAINERS_CONF ?= $(CURDIR)/containers/containers.conf
TARGETS ?= slim,train,judge
# Tags: $(REGISTRY)/medrl:0.1.0 (train), $(REGISTRY)/medrl-<target>:0.1.0. The default is where the pipeline and
# `medrl run --runner container` look by default; a site's registry: REGISTRY=registry.hospital.internal/medrl.
REGISTRY ?= ghcr.io/medrl
IMAGE_BASES := PYTHON_IMAGE CUDA_RUNTIME_IMAGE CUDA_DEVEL_IMAGE
images:
	$(PYTHON) containers/build.py images --targets $(TARGETS) --registry $(REGISTRY) $(if $(ENGINE),--engine $(ENGINE)) \
	  $(if $(WHEELHOUSE),--wheelhouse) $(foreach a,$(IMAGE_BASES),$(if $($(a)),--arg $(a)=$($(a)))) \
	  --arg GIT_SHA=$$(git rev-parse HEAD 2>/dev/null || echo unknown)

# Every locked wheel, once, into wheelhouse/<image>/ (sdists such as DeepSpeed built into wheels here); needs PyPI.
# Skipped per image while its lock is unchanged. WHEELHOUSE_IMAGES=slim,train-cpu for the CPU images only.
WHEELHOUSE_IMAGES ?= slim,train-cpu,train,judge
wheelhouse: install
	$(PY) containers/build.py wheelhouse --images $(WHEELHOUSE_IMAGES)

# A stand-in for python:3.11-slim made from Debian packages (debootstrap), for machines that cannot pull it.
standin-base:
	$(PYTHON) containers/build.py standin-base $(if $(ENGINE),--engine $(ENGINE))

# The GPU image's environment (torch, transformers, TRL, vLLM, DeepSpeed, flash-attn together), resolved by uv
# against PyPI without installing: needs the network, not a GPU. python -m medrl.gpu_check measures it on a GPU.
.PHONY: lock-gpu gpu-check
lock-gpu: install
	$(UV) pip compile pyproject.toml requirements-gpu.in --extra gpu --override requirements-gpu.in $(LOCK_FOR) -o requirements-gpu.lock

gpu-check: install
	$(PY) -m medrl.gpu_check
