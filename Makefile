# coldscan entry points. `make demo` and `make test` are the README's contract: each installs what
# the project needs (scripts/bootstrap, idempotent) and then does its job on a fresh Debian 12.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURES := target/fixtures

.PHONY: all bootstrap build release test lint fmt demo fuzz bench clean-fixtures

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
# Built with the release-checked profile (release + overflow checks). Also checks that the
# scanner without its `engine` feature (and the fuzz crate, which uses it so) links no libclamav.
test: lint
	! $(CARGO) tree -p coldscan-scanner --no-default-features -e normal | grep -q clamav
	! (cd scanner/fuzz && $(CARGO) tree -e normal | grep -q clamav)
	$(CARGO) build --workspace --profile release-checked --bins
	$(CARGO) test --workspace --profile release-checked

fmt:
	$(CARGO) fmt --all

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
