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

# The instants at which the date-sensitive tests (marker `dates`) run again: a winter and a
# summer evening (already tomorrow in Sweden), the nights DST ends and begins, 29 February.
CLOCKS := 2026-12-15T23:30:00Z 2026-06-15T22:30:00Z 2026-10-25T01:30:00Z 2027-03-28T00:30:00Z 2028-02-29T22:30:00Z

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest
	$(VENV)/bin/pytest -q $(foreach t,$(CLOCKS),--clock $(t))

serve: $(STAMP)
	$(VENV)/bin/gateway check --config $(CONFIG)
	exec $(VENV)/bin/gateway serve --config $(CONFIG)

check: $(STAMP)
	$(VENV)/bin/gateway check --config $(CONFIG)

bench: $(STAMP)
	$(VENV)/bin/python bench/intake.py

clean:
	rm -rf $(VENV) data *.egg-info
