# `make app` runs the dashboard, `make test` runs every test, `make lint` checks style and types.
# Each creates .venv/ when missing and installs jacreg into it (editable) with its dependencies.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501

.PHONY: app test lint bench clean-venv

app: $(VENV)/.runtime
	$(PY) -m streamlit run app/main.py --server.port $(PORT)

test: $(VENV)/.dev
	$(PY) -m pytest -q

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(VENV)/.runtime
	$(PY) benchmarks/jr_step.py

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

clean-venv:
	rm -rf $(VENV)
