# medcore's manual: every target documents itself (`make help`) and CI runs exactly `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.medcore-installed
UV_VERSION := 0.13.9
DEMO_DATA := data/demo
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help install lock lint typecheck airflow-init demo test test-bench test-fast fuzz test-integration test-ui run pretrain airflow-ui resend bench bench-report clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-17s %s\n", $$1, $$2}'

# Reinstalls only when the dependency pins change, so a second `make test` starts at once. Bytecode is compiled
# here, once (about half a minute): where PYTHONDONTWRITEBYTECODE is set, as on our machines, Python otherwise
# compiles TensorFlow, Keras and Airflow again in every process, 8 CPU-s each, and tests and the demo start dozens.
$(STAMP): pyproject.toml requirements.lock
	@echo "setting up $(VENV) with the locked dependencies (once; later calls skip this)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install --python $(PY) -q --compile-bytecode -r requirements.lock
	$(UV) pip install --python $(PY) -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the locked dependencies

lock: ## re-resolve requirements.lock after changing pyproject.toml
	$(UV) pip compile pyproject.toml --extra test --python-version 3.11 -q -o requirements.lock

airflow-init: install ## create or migrate the embedded Airflow's database and the training pool
	@echo "embedded Airflow: migrating its database in $${AIRFLOW_HOME:-airflow_home}/ (a minute the first time)"
	@bin/airflow-local airflow db migrate > /dev/null
	@bin/airflow-local airflow pools set training $$(nproc) "DenseNet training: one slot per core" > /dev/null

# `medcore watch` runs `airflow dags test` (on every core: bin/airflow-dags-test) with its output in the log and
# prints which model and stage runs, how many are done and an estimate, at least every 20 s; on failure why.
demo: airflow-init ## synthetic data -> embedded Airflow -> all 10 models -> report (MEDCORE_DATA_ROOT=... for real data)
	@if [ -z "$$MEDCORE_DATA_ROOT" ]; then $(MAKE) --no-print-directory $(DEMO_DATA)/.stamp; fi
	@mkdir -p runs; rc=0; \
	MEDCORE_CONFIG=configs/demo.yaml bin/airflow-local $(VENV)/bin/medcore watch \
	  --config configs/demo.yaml --log runs/demo-airflow.log -- bin/airflow-dags-test medical_training || rc=$$?; \
	report=$$(ls -t runs/*/report.md 2>/dev/null | head -1); \
	if [ -n "$$report" ]; then awk '/^## This morning/{on=1; next} /^## /{on=0} on && NF' "$$report" | cut -d'|' -f2-4,8; \
	  echo "report: $$(pwd)/$$report"; fi; exit $$rc

# Regenerated whenever the phantom generator changes, so a checkout never demos stale data.
$(DEMO_DATA)/.stamp: medcore/data/synthetic.py | $(STAMP)
	@echo "writing the synthetic demo data to $(DEMO_DATA)/"
	@rm -rf $(DEMO_DATA)
	$(VENV)/bin/medcore demo-data $(DEMO_DATA)
	@touch $@

# One pytest worker per core (pytest-xdist): most tests wait on one thread (eager TensorFlow on tiny images,
# subprocesses, Airflow), so two run side by side; tests sharing a trained fixture share an xdist_group.
TEST_WORKERS ?= $(shell nproc)
test: install ## run the product's test suite (CI runs it), the 25 slowest tests listed at the end
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=25 -m "not bench"

test-bench: install ## the tests of bench/ scripts that train real models (CI runs them; 3 min)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=5 -m bench tests/test_bench.py

lint: install ## ruff check and ruff format --check, with the rules in pyproject.toml (changes nothing)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install ## mypy on medcore/, with the settings in pyproject.toml ([tool.mypy])
	$(VENV)/bin/mypy

test-fast: install ## skip the tests that train real models
	$(PY) -m pytest -q -m "not slow"

# Every fuzz target of tests/ (manifests, label cells, config values and bytes, image bytes, run ids, DICOM
# headers, predict inputs and --out targets, registry writes killed, runs of one id at once)
# with FUZZ_EXAMPLES cases each; fails if fewer than 1,000 finish or the run's memory passes FUZZ_MAX_MIB.
FUZZ_EXAMPLES ?= 200
FUZZ_MAX_MIB ?= 2048
fuzz: install ## hypothesis fuzzing, >= 1,000 generated cases (~3 min): findings or one-line errors, never a traceback
	MEDCORE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) MEDCORE_FUZZ_MIN_CASES=1000 MEDCORE_FUZZ_MAX_MIB=$(FUZZ_MAX_MIB) \
	  $(PY) -m pytest -q -p no:cacheprovider tests/data/test_validation_fuzz.py tests/test_config_fuzz.py tests/test_layout.py \
	  tests/data/test_dicom_fuzz.py tests/assess/test_evaluation_fuzz.py tests/nights/test_registry_fuzz.py

test-integration: install ## CeleryExecutor on this machine's PostgreSQL and Redis, for real (skips without them)
	$(PY) -m pytest -q --durations=10 tests/integration

# Debian's chromium and chromium-driver (a browser download would need the internet); screenshots: artifacts/ui/.
test-ui: install ## the browser suite: log in, trigger a tiny run, read its report and e-mail in headless Chromium
	@command -v chromium > /dev/null && command -v chromedriver > /dev/null || \
	  { apt-get update -q && apt-get install -y -q chromium chromium-driver; }
	$(PY) -m pytest -q --durations=10 tests/ui

run: install ## train for real with conditions.yaml, without Airflow (MEDCORE_DATA_ROOT=../shared/datasets)
	$(VENV)/bin/medcore run

pretrain: install ## learn the shared backbone from every condition's train split into the registry (~40 min on 2 cores; MEDCORE_DATA_ROOT)
	$(VENV)/bin/medcore pretrain

# After `make demo`, the UI serves the demo's config and data (conditions.yaml's data folder would hold only
# the demo sets, so a run triggered there would fail at validate); MEDCORE_CONFIG or MEDCORE_DATA_ROOT wins.
airflow-ui: airflow-init ## start the embedded Airflow (scheduler, dag-processor, api-server) on 127.0.0.1:8080
	@config="$${MEDCORE_CONFIG:-$$(if [ -z "$$MEDCORE_DATA_ROOT" ] && [ -f $(DEMO_DATA)/.stamp ]; \
	  then echo $(CURDIR)/configs/demo.yaml; else echo $(CURDIR)/conditions.yaml; fi)}"; \
	data=$$(MEDCORE_CONFIG="$$config" $(PY) -c 'from medcore.config import load_config; print(load_config().data_root)' 2>&1 | tail -1); \
	echo "Airflow UI: http://127.0.0.1:$${AIRFLOW__API__PORT:-8080}  user admin, password in airflow_home/simple_auth_manager_passwords.json.generated"; \
	echo "serving config $$config (data: $$data); set MEDCORE_CONFIG=... or MEDCORE_DATA_ROOT=... to change"; \
	MEDCORE_CONFIG="$$config" exec bin/airflow-local airflow standalone

resend: install ## e-mail a run's report again: make resend RUN=<run id or folder under runs/> [TO="a@x b@y"]
	@test -n "$(RUN)" || { echo "usage: make resend RUN=<run id or folder name under runs/> [TO=\"a@x b@y\"]"; exit 2; }
	@bin/airflow-local $(VENV)/bin/medcore resend "$(RUN)" $(foreach to,$(TO),--to "$(to)")

# The real sets: MEDCORE_DATA_ROOT, default ../shared/datasets beside the checkout.
BENCH_DATA ?= $(or $(MEDCORE_DATA_ROOT),$(abspath ../shared/datasets))

bench: install ## measure everything in bench/ on the real sets (~4 h on 2 cores, ~2 h of paired pipeline / plain runs, plus the eight nights of bench/nights.py and the two runs of bench/resize.py) and regenerate BENCHMARKS.md
	@if [ ! -f "$(BENCH_DATA)/README.md" ]; then \
	  echo "bench skipped: no real datasets at $(BENCH_DATA) (set MEDCORE_DATA_ROOT)"; exit 0; fi; \
	set -e; export MEDCORE_DATA_ROOT="$(BENCH_DATA)"; \
	$(PY) bench/validate_speed.py; \
	$(PY) bench/gradcam_speed.py; \
	$(PY) bench/peak.py; \
	$(PY) bench/precision_profile.py; \
	$(PY) bench/train_throughput.py --sizes 64 128 224 --rounds 5 --pipeline-modes mixed_bfloat16 --pipeline-fused --thread-sizes 128 160; \
	$(PY) bench/train_throughput.py --pairs 5 --pair-sizes 128 160 --pair-threads 1 --pair-together; \
	$(PY) bench/dicom_throughput.py --execution graph; \
	$(PY) bench/overhead.py; \
	$(PY) bench/nightly.py; \
	$(PY) bench/deletion_baselines.py; \
	$(PY) bench/nightly.py --config configs/following-night.yaml --after bench/results/nightly.json \
	  --name nightly_following; \
	$(PY) bench/night_cost.py; \
	$(PY) bench/resize.py; \
	MEDCORE_REGISTRY_ROOT=$(CURDIR)/runs/bench/shared-backbone $(VENV)/bin/medcore pretrain; \
	$(PY) bench/nightly.py --config configs/shared-backbone.yaml --name nightly_shared \
	  --shared-backbone runs/bench/shared-backbone/shared_backbone.keras; \
	$(PY) bench/nights.py; \
	$(PY) bench/report.py

bench-report: install ## regenerate BENCHMARKS.md from bench/results/*.json without measuring anything
	$(PY) bench/report.py

clean: ## remove runs, demo data and the embedded Airflow state (keeps .venv)
	rm -rf runs $(DEMO_DATA) airflow_home
