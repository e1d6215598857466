# coldscan entry points. `make demo` and `make test` are the README's contract: each installs what
# the project needs (scripts/bootstrap, idempotent) and then does its job on a fresh Debian 12.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURES := target/fixtures

.PHONY: all bootstrap build release test lint fmt demo fuzz bench clean-fixtures e2e

all: build

bootstrap:
	@bash scripts/bootstrap

build: bootstrap
	$(CARGO) build --workspace

release: bootstrap
	$(CARGO) build --workspace --release

lint: bootstrap
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The whole test suite: unit tests, fixture-based end-to-end tests (fixtures are generated and
# cached under target/fixtures), lints.
test: lint
	$(CARGO) build --workspace --release --bins
	$(CARGO) test --workspace --release

fmt:
	$(CARGO) fmt --all

# Slow end-to-end tests that boot VMs under QEMU (TCG): the appliance as PID 1.
e2e: bootstrap
	$(CARGO) test --release -p coldscan --test appliance_qemu -- --ignored

# Generates a guest disk and shows what coldscan sees on it.
demo: bootstrap
	$(CARGO) build --release --workspace --bins
	@bash scripts/demo

# Each fuzz target for FUZZ_SECONDS (default 600) with cargo fuzz (installed on demand).
FUZZ_SECONDS ?= 600
fuzz: bootstrap
	@bash scripts/fuzz $(FUZZ_SECONDS)

# Benchmarks against peers measured in the same run (not part of `make test`).
bench: bootstrap
	$(CARGO) build --release --workspace --bins
	@bash scripts/bench

clean-fixtures:
	rm -rf $(FIXTURES)
