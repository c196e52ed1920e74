# Causeway: build, run and test.
#   make deps     install system packages (as root) and the Python venv (.venv) for the tests
#   make build    debug build
#   make release  release build
#   make run      deps + release, then a sandbox cluster with the proxy in front (Ctrl-C ends both)
#   make test     deps + build, then Swift unit tests and the Python integration tests
#   make clean    remove build products (and a leftover sandbox)

SHELL := /bin/bash
SWIFT ?= swift
SANDBOX_DIR ?= .sandbox
PYTEST ?= .venv/bin/pytest

.NOTPARALLEL:
.PHONY: all deps build release run test clean

all: build

deps:
	scripts/install-deps.sh

build:
	$(SWIFT) build

release:
	$(SWIFT) build -c release

run: deps release
	SANDBOX_DIR=$(SANDBOX_DIR) scripts/run-sandbox.sh

# Runs every suite even when one fails; fails when any did. pytest's "no tests collected" (exit 5)
# is not a failure.
test: deps build
	$(SWIFT) build --build-tests
	@status=0; \
	$(SWIFT) test || status=1; \
	if [ -d Tests/integration ]; then \
		CAUSEWAY_BIN="$(CURDIR)/.build/debug/causeway" CAUSEWAY_BENCH_BIN="$(CURDIR)/.build/debug/causeway-bench" \
			$(PYTEST) -q Tests/integration; rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "pytest: no integration tests collected"; \
		elif [ $$rc -ne 0 ]; then status=1; fi; \
	else \
		echo "Tests/integration does not exist: no integration tests to run"; \
	fi; \
	if [ $$status -ne 0 ]; then echo "make test: FAILED"; fi; \
	exit $$status

clean:
	@for bin in .build/release/causeway .build/debug/causeway; do \
		if [ -d "$(SANDBOX_DIR)" ] && [ -x $$bin ]; then $$bin sandbox down --dir "$(SANDBOX_DIR)"; break; fi; \
	done
	rm -rf .build .pytest_cache
