# make run: set up .venv (once) and run the digits demo end to end.
# make test: set up .venv (once) and run the whole test suite.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CONFIG ?= conf/image_cnn.yaml

.PHONY: run run-text run-gan mlflow browser test test-fast coverage lint bench bench-full clean airflow-test image-test compose-check

# Re-installs only when the pinned requirements, the package metadata or the install script change.
$(STAMP): requirements.txt setup.cfg pyproject.toml scripts/install.sh
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	. $(VENV)/bin/activate && bash scripts/install.sh
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/dlfusion run $(CONFIG) --summary-json work/demo/summary.json

# The text sentiment demo: 20,000 generated reviews -> Spark vocabulary -> Horovod LSTM.
run-text: $(STAMP)
	$(VENV)/bin/dlfusion run conf/text_lstm.yaml --summary-json work/text/summary.json

# The GAN on the digits demo (the image classifier's workdir: run `make run` first to share its data).
run-gan: $(STAMP)
	$(VENV)/bin/dlfusion run conf/image_gan.yaml --summary-json work/demo/gan_summary.json

# A real MLflow tracking server on http://127.0.0.1:5000 (SQLite + artifacts under work/mlflow-server).
mlflow: $(STAMP)
	$(VENV)/bin/dlfusion mlflow-server --root work/mlflow-server --port $(or $(MLFLOW_PORT),5000)

# Two pytest workers (pytest-xdist): much of the suite waits on processes, servers and timeouts, which
# the other worker's tests fill. --dist loadgroup: the tests that share a module-scoped fixture (a
# trained model, a server) run on one worker (tests/conftest.py groups them, slow ones first), so
# that no fixture is built twice. PYTEST_WORKERS=0: serial.
PYTEST_WORKERS ?= 2

test: $(STAMP) browser
	$(VENV)/bin/ruff check pipelines models jobs tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

# Debian's Chromium, for the test that opens the MLflow UI in a real (headless) browser.
browser:
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# The fast set: everything not marked slow (minutes of Spark/Horovod work), for the edit-test loop.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The whole suite under coverage.py, subprocesses included (setup.cfg [coverage:run]); the total line
# coverage is the report's last line.
coverage: $(STAMP) browser
	rm -rf work/coverage && mkdir -p work/coverage
	$(VENV)/bin/coverage run -m pytest $(PYTEST_ARGS)
	$(VENV)/bin/coverage combine -q
	$(VENV)/bin/coverage report

lint: $(STAMP)
	$(VENV)/bin/ruff check pipelines models jobs tests benchmarks
	$(VENV)/bin/ruff format --check pipelines models jobs tests benchmarks
	$(VENV)/bin/lint-imports

# Quick mode (under 10 minutes here): every ratio, its target and met/missed in one table.
bench: $(STAMP)
	$(VENV)/bin/python benchmarks/run_all.py

# The sizes the targets are defined at (about an hour on 2 cores); the table goes in benchmarks/README.md.
bench-full: $(STAMP)
	$(VENV)/bin/python benchmarks/run_all.py --full

clean:
	rm -rf work .pytest_cache

# The Airflow DAG (jobs/airflow/dlfusion_dag.py) under a real Airflow 2.10 in its own venv
# (.venv-airflow, created when missing), a throwaway AIRFLOW_HOME and SQLite: import, task chain,
# an end-to-end `airflow dags test` on the demo, retries by exit code (docs/operations.md, "Scheduling").
airflow-test: $(STAMP)
	bash jobs/airflow/test.sh $(PYTEST_ARGS)

# The container images, built with podman and proved inside their own builds (the digits demo runs in
# the image; the MLflow server runs against PostgreSQL and S3): docker/README.md. Needs no .venv.
image-test:
	bash docker/image-test.sh

# docker/docker-compose.yml validated with docker/.env.example (docker-compose config; starts nothing).
compose-check:
	bash docker/compose-check.sh
