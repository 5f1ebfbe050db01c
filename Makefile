# The two commands of the README. Both build .venv from pyproject.toml when it is
# missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CONFIG ?= config.example.yaml

.PHONY: run test serve check clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	exec $(VENV)/bin/gateway sandbox

test: $(STAMP)
	$(VENV)/bin/pytest

serve: $(STAMP)
	$(VENV)/bin/gateway check --config $(CONFIG)
	exec $(VENV)/bin/gateway serve --config $(CONFIG)

check: $(STAMP)
	$(VENV)/bin/gateway check --config $(CONFIG)

bench: $(STAMP)
	$(VENV)/bin/python bench/intake.py

clean:
	rm -rf $(VENV) data *.egg-info
