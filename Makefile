# Set-up and the main jobs. `make demo` and `make test` work on a fresh machine that reaches only the
# package registries: they create .venv, install CPU PyTorch and the project, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := demo

.PHONY: demo test lint bench clean-demo

$(VENV)/installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # CPU build here; GPU clusters use environment.yml
	$(PY) -m pip install -q -e '.[dev,data]'
	touch $@

demo: $(VENV)/installed
	$(PY) -m data_prep.demo_corpus --out $(DEMO)/data
	$(PY) -m phi1.cli fit --config experiments/tiny.yaml
	@echo "TensorBoard logs: runs/tiny/   open them with: $(VENV)/bin/tensorboard --logdir runs"

test: $(VENV)/installed
	sh .ci/install-sandbox.sh
	$(PY) -m pytest -q

lint: $(VENV)/installed
	$(VENV)/bin/ruff check phi1 data_prep evals tests bench
	$(VENV)/bin/ruff format --check phi1 data_prep evals tests bench

bench: $(VENV)/installed
	$(PY) bench/train_step.py
	$(PY) -m bench.sandbox

clean-demo:
	rm -rf $(DEMO) runs/tiny
