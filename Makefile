# MockAI: two commands on a fresh machine.
#   make run    set up (venv, pinned packages, models) and start the app on http://127.0.0.1:8501
#   make test   set up (plus test tools and Chromium) and run every test
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test setup setup-test lint bench

setup:
	bash scripts/setup.sh run

setup-test:
	bash scripts/setup.sh test

run: setup
	$(PY) -m pipeline.preflight
	$(PY) -m streamlit run app.py --server.port 8501 --server.headless true --server.maxUploadSize "$${MOCKAI_MAX_UPLOAD_MB:-500}"

lint: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	bash scripts/run_tests.sh

bench: setup
	$(PY) -m bench
