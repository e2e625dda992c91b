# sipmesh: the two commands of the README (`make run`, `make test`) and `make bench`.
# Each bootstraps .venv on first use and is quick once it exists.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench lint clean

run: $(VENV)/.stamp-run
	$(BIN)/sipmesh run

test: $(VENV)/.stamp-test
	tools/debian-packages.sh tests/debian-packages.txt
	$(BIN)/python -m pytest -v

bench: $(VENV)/.stamp-bench
	$(BIN)/python bench/cbor_bench.py
	$(BIN)/python bench/frame_bench.py
	$(BIN)/python bench/sip_bench.py
	$(BIN)/python bench/overlay_bench.py --quick
	$(BIN)/python bench/autopeer_bench.py
	$(BIN)/python bench/board_bench.py --soak 60

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check .

$(VENV)/.stamp-run: pyproject.toml tools/bootstrap.sh
	PYTHON=$(PYTHON) tools/bootstrap.sh
	touch $@

$(VENV)/.stamp-test: pyproject.toml tools/bootstrap.sh
	PYTHON=$(PYTHON) tools/bootstrap.sh test
	touch $@

$(VENV)/.stamp-bench: pyproject.toml tools/bootstrap.sh
	PYTHON=$(PYTHON) tools/bootstrap.sh bench
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
