# The two commands a newcomer needs: `make demo` and `make test`. Each builds .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export LITELLM_LOCAL_MODEL_COST_MAP := True
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: demo serve-demo test bench lint results clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[plot]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,plot]"
	touch $@ $(VENV)/.installed-base

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-base

demo: $(VENV)/.installed-base
	$(BIN)/uniscale-lc demo --plot demo.png

$(VENV)/.installed-server: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[server]"
	touch $@

# The OpenAI-compatible server on the simulated pool (Ctrl-C stops it); docs/server.md has a curl to try.
serve-demo: $(VENV)/.installed-server
	$(BIN)/uniscale-lc serve examples/serve_demo.py:router --port 8000

# pytest exits 5 when it collected no tests: a run with no tests is a defect, so fail loudly.
test: $(VENV)/.installed-test
	@$(BIN)/python -m pytest -q -p no:cacheprovider; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$status

# Baseline libraries (MABWiser, contextualbandits) go into a separate venv, never into the project's.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml benchmarks/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e ".[test]"
	$(BENCH_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements.txt || echo "baseline libraries unavailable: the policy benchmark reports ours alone"
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python benchmarks/bench_policy.py
	$(BENCH_VENV)/bin/python benchmarks/bench_overhead.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check uniscale_lc tests benchmarks examples scripts
	$(BIN)/mypy uniscale_lc
	$(BIN)/python scripts/check_dependencies.py

results: $(VENV)/.installed-base
	$(BIN)/python scripts/make_results.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
