# `make app` runs the dashboard, `make test` runs every test. Both create .venv/ when missing.
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

bench: $(VENV)/.runtime
	$(PY) benchmarks/jr_step.py

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

clean-venv:
	rm -rf $(VENV)
