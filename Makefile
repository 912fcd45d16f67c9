# Set-up and the main jobs. `make demo` and `make test` work on a fresh machine that reaches only the
# package registries: they create .venv, install CPU PyTorch and the project, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := demo

.PHONY: demo test test-slurm lint bench clean-demo

$(VENV)/installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # CPU build here; GPU clusters use environment.yml
	$(PY) -m pip install -q -e '.[dev,data]'
	touch $@

# Build the offline corpus, train the tiny model, then grade it on HumanEval and MBPP (its near-zero
# score is the honest result of 3 CPU minutes). The run lives in runs/tiny (its name); a second `make demo`
# resumes it (nothing left to train once it has finished) and grades it again.
GENERATE = $(PY) -m evals.generate --tokenizer $(DEMO)/data/tokenizer.json --max-new-tokens 128 --batch-size 32 --overwrite

demo: $(VENV)/installed
	sh .ci/install-sandbox.sh
	$(PY) -m data_prep.demo_corpus --out $(DEMO)/data
	$(PY) -m phi1.cli fit --config experiments/tiny.yaml $$(test -e runs/tiny/checkpoints/last.ckpt && echo --ckpt_path last)
	run=runs/tiny && set -e && \
	$(GENERATE) --checkpoint $$run/checkpoints/last.ckpt --benchmark humaneval --out $$run/humaneval-samples.jsonl && \
	$(PY) -m evals.evaluate --benchmark humaneval --samples $$run/humaneval-samples.jsonl \
	  --out $$run/humaneval-results.jsonl --overwrite && \
	$(GENERATE) --checkpoint $$run/checkpoints/last.ckpt --benchmark mbpp \
	  --out $$run/mbpp-samples.jsonl && \
	$(PY) -m evals.evaluate --benchmark mbpp \
	  --samples $$run/mbpp-samples.jsonl --out $$run/mbpp-results.jsonl --overwrite && \
	echo "TensorBoard logs: $$run   open them with: $(VENV)/bin/tensorboard --logdir runs"

test: $(VENV)/installed
	sh .ci/install-sandbox.sh
	$(PY) -m pytest -q

# The tests marked `slurm` against a real single-node SLURM on this machine (root, Debian/Ubuntu: installs
# slurm-wlm and munge, writes /etc/slurm/slurm.conf); `experiments/slurm/local-cluster.sh stop` stops it.
test-slurm: $(VENV)/installed
	experiments/slurm/local-cluster.sh start
	$(PY) -m pytest -q -m slurm

lint: $(VENV)/installed
	$(VENV)/bin/ruff check phi1 data_prep evals tests bench
	$(VENV)/bin/ruff format --check phi1 data_prep evals tests bench

bench: $(VENV)/installed
	$(PY) bench/train_step.py
	$(PY) -m bench.sandbox
	$(PY) -m bench.llm_engine
	$(PY) -m bench.filter

clean-demo:
	rm -rf $(DEMO) runs/tiny
