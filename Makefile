# make run: set up .venv (once) and run the digits demo end to end.
# make test: set up .venv (once) and run the whole test suite.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CONFIG ?= conf/image_cnn.yaml

.PHONY: run run-text test lint bench clean

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

test: $(STAMP)
	$(VENV)/bin/ruff check pipelines models jobs tests benchmarks
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check pipelines models jobs tests benchmarks
	$(VENV)/bin/ruff format --check pipelines models jobs tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/read_throughput.py

clean:
	rm -rf work .pytest_cache
