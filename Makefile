# Two commands a user needs: `make test` and `make demo`. Each creates .venv when missing and
# installs the project first. torch is pinned to the CPU build (an unpinned torch pulls a
# multi-GB CUDA wheel); constraints.txt pins every other package for a reproducible install.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LS_VENV := .venv-labelstudio
PROTOS := $(wildcard proto/activedpo/*/*.proto)

.PHONY: test test-fast demo install install-demo docs lint proto proto-check clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,ray,labelstudio]"
	# the Label Studio server the integration tests start: a separate application, in a venv of its own
	test -x $(LS_VENV)/bin/label-studio || { $(PYTHON) -m venv $(LS_VENV) && \
	  $(LS_VENV)/bin/python -m pip install -q --upgrade pip && $(LS_VENV)/bin/python -m pip install -q "label-studio==1.23.2"; }
	# and its database migrated once: a test's Label Studio starts from a copy (5 s instead of 40)
	$(BIN)/python -c "from activedpo_client.lslocal import migrated_database; migrated_database('$(LS_VENV)/bin/label-studio')"
	touch $@

test: $(STAMP)
	$(BIN)/ruff check .
	$(MAKE) -s proto-check
	# two workers: one's model work overlaps the other's server and Label Studio waits; each takes whole files
	# in collection order (the longest first, see tests/conftest.py), not xdist's order by test count
	$(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# the edit loop: the unit tests but the one marked slow (the default world's DPO check, about two minutes
# alone); `make test` runs it
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n 2 -m "not slow" tests/unit

# the demo needs the project alone: no test tools, no Ray, no Label Studio
DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	touch $@

install-demo: $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/activedpo-client quickstart

# docs/cli.md, generated from both command lines (a test fails when it is stale)
docs: $(STAMP)
	$(BIN)/python -m activedpo_client.cli.reference docs/cli.md

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# gRPC stubs, generated next to the .proto files and committed
proto: $(STAMP)
ifeq ($(PROTOS),)
	@echo "no .proto files under proto/ yet"
else
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=proto --grpc_python_out=proto --pyi_out=proto $(PROTOS)
endif

proto-check: $(STAMP)
ifeq ($(PROTOS),)
	@echo "proto-check: no .proto files under proto/ yet"
else
	@tmp=$$(mktemp -d) && \
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=$$tmp --grpc_python_out=$$tmp --pyi_out=$$tmp $(PROTOS) && \
	cd $$tmp && for f in $$(find . -name '*_pb2*'); do \
	  cmp -s "$$f" "$(CURDIR)/proto/$$f" || { echo "stale generated stub: proto/$$f (run 'make proto')"; exit 1; }; \
	done && echo "proto-check: stubs match proto/"
endif

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .ruff_cache
