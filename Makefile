# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# constraints-dev.txt pins the dev/CI set (pip freeze of a working venv) so a fresh install
# resolves at once; the package's own ranges in pyproject.toml stay wide for users.
# This machine has a CPU build of torch 2.13.0 on local disk; a GPU user overrides this,
# e.g. `make install TORCH_SPEC='torch>=2.1'` with their CUDA index.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
DEMO := data/demo
RUNS := runs

.PHONY: install demo test lint clean bench compressai-peer

$(STAMP): pyproject.toml constraints-dev.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints-dev.txt "$(TORCH_SPEC)" -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m jobs.prepare_demo --output $(DEMO)
	$(BIN)/python -m jobs.train --input $(DEMO)/digits --output $(RUNS)/digits-mlp --epochs 200
	$(BIN)/python -m jobs.train --input $(DEMO)/photos/train --eval-input $(DEMO)/photos/heldout \
		--output $(RUNS)/photos-conv --epochs 50 --max-steps 500 --batch-size 64
	$(BIN)/python -m jobs.encode --input $(DEMO)/digits --checkpoint $(RUNS)/digits-mlp \
		--output $(RUNS)/digits-archive
	$(BIN)/python -m jobs.decode --input $(RUNS)/digits-archive --checkpoint $(RUNS)/digits-mlp \
		--output $(RUNS)/digits-restored
	$(BIN)/python -m jobs.verify --original $(DEMO)/digits --restored $(RUNS)/digits-restored \
		--archive $(RUNS)/digits-archive --checkpoint $(RUNS)/digits-mlp
	$(BIN)/python -m jobs.encode --input $(DEMO)/photos/heldout --checkpoint $(RUNS)/photos-conv \
		--output $(RUNS)/photos-archive
	$(BIN)/python -m jobs.decode --input $(RUNS)/photos-archive --checkpoint $(RUNS)/photos-conv \
		--output $(RUNS)/photos-restored
	$(BIN)/python -m jobs.verify --original $(DEMO)/photos/heldout --restored $(RUNS)/photos-restored \
		--archive $(RUNS)/photos-archive --checkpoint $(RUNS)/photos-conv
	@echo "reports: $(RUNS)/digits-mlp/report.png $(RUNS)/photos-conv/report.png"

test: lint
	$(BIN)/python -m pytest -q --durations=15

# Benchmarks: regenerates BENCHMARKS.md (and runs/bench/); trains the demo models first if
# they are missing. On 2 CPU cores the learned section alone took 56 minutes (its 30-minute
# training and CompressAI's models included) and the cache section about 14. With the
# CompressAI peer below installed, the learned section trains CompressAI's models beside vaezip's.
bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints-dev.txt -e ".[bench]"
	test -f $(RUNS)/photos-conv/config.json || $(MAKE) demo
	$(BIN)/python -m jobs.bench $(if $(wildcard $(PEER)/bin/python),--compressai-python $(PEER)/bin/python)

# CompressAI in an interpreter of its own (it pins numpy<2 and needs a torchvision built for
# its torch): the benchmark's peer codec. On this machine torch 2.14.1 and torchvision 0.29.1
# lie on disk; elsewhere set PEER_TORCH to a matching pair.
PEER ?= .venv-compressai
PEER_TORCH ?= torch==2.14.1 torchvision==0.29.1
compressai-peer:
	$(PYTHON) -m venv $(PEER)
	$(PEER)/bin/python -m pip install -q $(PEER_TORCH) compressai==1.2.8

# Lint, formatting and types: ruff (lint + format check) and mypy (config in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check pipeline jobs tests
	$(BIN)/ruff format --check pipeline jobs tests
	$(BIN)/mypy

clean:
	rm -rf $(RUNS) $(DEMO)
