# stackrox.prefetch — every target calls one script in scripts/; see docs/DESIGN.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help setup proto lint test test-agent test-collection test-integration test-e2e test-image flake-hunt demo bench image clean

help:
	@echo "make demo    - set up everything and prefetch images onto a real local 3-node Kubernetes cluster"
	@echo "make test    - set up everything and run every test (units, sanity, integration, e2e, image)"
	@echo "make bench   - benchmarks (agent vs. baselines, image size)"
	@echo "make flake-hunt [ARGS='-n 3 tests/e2e'] - run suites repeatedly with the other core busy; list every test that failed"
	@echo "make proto   - regenerate the agent's protobuf code"
	@echo "make image   - build the agent image with Debian's tools and a local registry"

setup:
	@bash scripts/bootstrap.sh

proto: setup
	@bash scripts/proto.sh

lint: setup
	@bash scripts/lint.sh

test: setup
	@bash scripts/test-all.sh

test-agent: setup
	@bash scripts/test-agent.sh

test-collection: setup
	@bash scripts/test-collection.sh

test-integration: setup
	@bash scripts/test-integration.sh

test-e2e: setup
	@bash scripts/test-e2e.sh

test-image: setup
	@bash scripts/test-image.sh

flake-hunt: setup
	@bash scripts/flake-hunt.sh $(ARGS)

demo: setup
	@bash scripts/demo.sh

bench: setup
	@bash scripts/bench.sh

image: setup
	@bash scripts/image.sh

clean:
	rm -rf build .pytest_cache tests/output
