PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench proto docs clean

$(BIN)/python:
	$$(command -v $(PY) || command -v python3) -m venv $(VENV)

# torch first, pinned: 2.13.0 is the CPU wheel on this machine's disk; anything else pulls CUDA.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,ray,mlflow,dashboard]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/murmura run examples/digits-fedavg.toml

# Tests run on TEST_WORKERS pytest-xdist workers, a file at a time (module fixtures run once),
# in collection order (tests/conftest.py puts the files with process-level tests first): most
# of the suite waits on node processes and sockets, so more workers than cores pays.
TEST_WORKERS ?= 3

# The dashboard test drives Debian's chromium (CI runs as root); it fails, not skips, without it.
test: $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sim.py

docs: $(STAMP)
	$(BIN)/python -m murmura.config_doc README.md

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src src/murmura/transport/proto/murmura.proto src/murmura/transport/proto/secagg.proto src/murmura/transport/proto/peer.proto

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
