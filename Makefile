# coldscan entry points. `make demo` and `make test` are the README's contract: each installs what
# the project needs (scripts/bootstrap, idempotent) and then does its job on a fresh Debian 12.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURES := target/fixtures

.PHONY: all bootstrap build release test lint fmt demo fuzz bench clean-fixtures image boot-test bench-boot e2e

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
# scanner without its `engine` feature (and the fuzz crate, which uses it so), the image builder
# and the manager link no libclamav.
test: lint
	! $(CARGO) tree -p coldscan-scanner --no-default-features -e normal | grep -q clamav
	! $(CARGO) tree -p coldscan-image -e normal | grep -q clamav
	! $(CARGO) tree -p coldscan-manager -e normal | grep -q clamav
	! (cd scanner/fuzz && $(CARGO) tree -e normal | grep -q clamav)
	$(CARGO) build --workspace --profile release-checked --bins
	$(CARGO) test --workspace --profile release-checked

# End-to-end tests that need root and live services beyond `make test`: the libvirt connector
# scans a running QEMU (TCG) guest through a pull-mode backup (scripts/libvirt-up starts
# libvirtd when it is not running).
fmt:
	$(CARGO) fmt --all

# Slow end-to-end tests that boot VMs under QEMU (TCG): the appliance as PID 1 (oneshot, daemon,
# console, seccomp, config disk, spool, HTTPS, the built image under OVMF) reporting to the
# coldscan-manager built just before, and a running libvirt guest scanned through a pull-mode
# backup.
e2e: bootstrap
	$(CARGO) build --workspace --profile release-checked --bins
	COLDSCAN_MANAGER_BIN=$(abspath $(or $(CARGO_TARGET_DIR),target))/release-checked/coldscan-manager \
	  $(CARGO) test -p coldscan --profile release-checked --test appliance_qemu -- --ignored --skip bench_
	COLDSCAN_MANAGER_BIN=$(abspath $(or $(CARGO_TARGET_DIR),target))/release-checked/coldscan-manager \
	  $(CARGO) test -p coldscan --profile release-checked --test appliance_signatures -- --ignored
	$(CARGO) test -p coldscan-manager --profile release-checked libvirt:: -- --ignored

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
	$(MAKE) bench-boot

# The appliance image (raw, qcow2, VMDK, OVA, VHDX) in $(IMAGE_OUT); the kernel and EFI stub are
# pinned in image/kernel.lock. Reproducible: SOURCE_DATE_EPOCH defaults to the last commit's time.
# Extra options (e.g. IMAGE_ARGS="--db DIR") go to `coldscan-image build`.
IMAGE_OUT ?= target/image
IMAGE_ARGS ?=
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH
image: bootstrap
	$(CARGO) build --release -p coldscan -p coldscan-image
	target/release/coldscan-image build $(IMAGE_ARGS) --out $(IMAGE_OUT)

# Boots the raw and qcow2 images under QEMU (TCG) + OVMF; success is the readiness line on the
# serial console followed by power-off, within 120 s.
boot-test: image
	@bash scripts/boot-image $(IMAGE_OUT)/coldscan.raw raw 120
	@bash scripts/boot-image $(IMAGE_OUT)/coldscan.qcow2 qcow2 120

# Boot-to-readiness under TCG and the image's size breakdown.
bench-boot: image
	@bash scripts/bench-boot $(IMAGE_OUT) 3

clean-fixtures:
	rm -rf $(FIXTURES)
