# The two set-up commands of the README:
#   make run    create .venv (pip, pinned versions; torch from the local wheel store) and run
#               the whole pipeline on the embedded default (config.yaml)
#   make test   the test suite (creates .venv first if needed)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.leam-installed
CORES  ?= all

.PHONY: run test env clean

run: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES)

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

env: $(STAMP)

$(STAMP): pyproject.toml envs/torch.txt envs/requirements.lock envs/nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r envs/torch.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q -r envs/requirements.lock
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -r envs/nodeps.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

clean:
	rm -rf results logs .snakemake
