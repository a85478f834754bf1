# llmsim developer targets. PYTHON may point at a virtualenv's interpreter.
PYTHON ?= python3
PROTO_SRC := $(shell find proto -name '*.proto')
GEN_DIR := .

.PHONY: install run test lint bench proto proto-check clean

install:
	$(PYTHON) -m pip install -e '.[dev,profiler]'

# The main job: validate the RTX PRO 6000 / Llama-3.1-8B example against its measured run.
run:
	$(PYTHON) -m llmsim validate examples/rtxpro6000-llama-3.1-8b.yaml \
		--measured llmservingsim/measured/RTXPRO6000/Llama-3.1-8B --out out/validate-rtxpro6000

test: proto-check
	$(PYTHON) -m pytest -q

# Code health: ruff (lint + import order) over the tree, mypy --strict over llmsim/ (pyproject.toml).
lint:
	$(PYTHON) -m ruff check . && $(PYTHON) -m mypy

bench:
	$(PYTHON) -m pytest -q benchmarks --benchmark-enable --benchmark-only -p no:randomly -s

# Regenerate Python code from proto/ (committed under llmsim/v1/).
proto:
	$(PYTHON) -m grpc_tools.protoc -Iproto --python_out=$(GEN_DIR) --pyi_out=$(GEN_DIR) \
		--grpc_python_out=$(GEN_DIR) $(PROTO_SRC)

# Fails when the committed generated code differs from what proto/ generates.
proto-check:
	@tmp=$$(mktemp -d); \
	$(PYTHON) -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp \
		--grpc_python_out=$$tmp $(PROTO_SRC) && \
	for f in $$(cd $$tmp && find . -name '*.py' -o -name '*.pyi'); do \
		cmp -s $$tmp/$$f $(GEN_DIR)/$$f || { echo "stale generated code: $$f (run 'make proto')"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "generated code is up to date"

clean:
	rm -rf out build *.egg-info .pytest_cache .benchmarks
