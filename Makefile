# medrl: `make demo` and `make test` are all a newcomer needs; both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench lint compile clean lock

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/medrl demo --out medrl-runs

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

bench: install
	$(PY) -m pytest tests/benchmarks -s -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check src components pipelines tests
	$(VENV)/bin/ruff format --check src components pipelines tests
	$(VENV)/bin/mypy src/medrl/config.py src/medrl/infra
	$(VENV)/bin/yamllint -s k8s

compile: install
	$(VENV)/bin/medrl pipeline compile --out pipelines/compiled/study.yaml

lock: install
	$(PY) -m medrl.infra.image .

clean:
	rm -rf medrl-runs .pytest_cache
