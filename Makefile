# boxd — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := build

GO        ?= go
BIN       := bin/boxd
OUT       := $(CURDIR)/out
E2E_OUT   ?= $(OUT)/e2e
# The benchmarks' L1 gets every host core, as when their recorded numbers
# were taken (the harness defaults to one, for reliability: boxd nested
# --help). BenchmarkNestedFaults, which measures that reliability, is run
# by hand (docs/iobench.md).
BENCH_L1_CPUS ?= $(shell nproc)
STATICCHECK_VERSION := v0.8.2
DEBIAN_PACKAGES := qemu-system-x86 linux-image-amd64 busybox-static kmod cpio \
	linux-source-6.1 bc flex bison libelf-dev libssl-dev xz-utils build-essential \
	iproute2 e2fsprogs xfsprogs debootstrap lz4

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install the Debian packages and Go tools boxd needs (idempotent)
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	else echo "deps: Debian packages present"; fi
	$(GO) mod download
	@command -v staticcheck >/dev/null || test -x "$$($(GO) env GOPATH)/bin/staticcheck" || \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: build
build: ## build bin/boxd
	$(GO) build -o $(BIN) ./cmd/boxd

.PHONY: kernel
kernel: ## build the guest kernel (cached outside the clone by a hash of its inputs)
	bash kernel/build.sh

.PHONY: initramfs
initramfs: ## build the guest init and in-guest boxd (static, out/guest) and the cached guest initramfs
	@mkdir -p $(OUT)/guest
	CGO_ENABLED=0 $(GO) build -o $(OUT)/guest/init ./guest-init/cmd/init
	CGO_ENABLED=0 $(GO) build -o $(OUT)/guest/boxd ./cmd/boxd
	$(GO) run ./guest-init/cmd/mkinitramfs --init $(OUT)/guest/init --boxd $(OUT)/guest/boxd

.PHONY: image
image: ## build the Debian root file system image from Debian's registry (cached by its inputs)
	bash image/build.sh

.PHONY: unit
unit: ## tiers 1 and 2: unit tests, and KVM tests on the host's /dev/kvm (they skip without it)
	$(GO) test -race -count=1 ./...

.PHONY: e2e
e2e: build kernel initramfs image ## tier 3: end-to-end tests, inside the nested harness when the host lacks VT-x/AMD-V
	@mkdir -p $(E2E_OUT)
	$(GO) test -c -tags e2e -o $(OUT)/e2e.test ./e2e
	CGO_ENABLED=0 $(GO) build -o $(OUT)/guesttool ./e2e/guesttool
	BOXD_BIN=$(CURDIR)/$(BIN) BOXD_E2E_GUESTTOOL=$(OUT)/guesttool \
		scripts/e2e.sh $(BIN) $(E2E_OUT) $(OUT)/e2e.test -test.count=1 -test.timeout=40m

.PHONY: lint
lint: ## gofmt, go vet, staticcheck
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" staticcheck ./...

.PHONY: test
test: lint unit e2e ## every tier that can run on this machine (what CI runs)

.PHONY: bench
bench: build kernel initramfs image ## benchmarks: medians, p99 and ratios, side by side; never pass/fail on time
	$(BIN) bench setup
	$(GO) test -run '^$$' -bench . -benchtime 20x ./vmm/... ./virtio/... ./agent/...
	$(GO) test -c -tags e2e -o $(OUT)/e2e.test ./e2e
	CGO_ENABLED=0 $(GO) build -o $(OUT)/guesttool ./e2e/guesttool
	$(BIN) nested --cpus $(BENCH_L1_CPUS) -- $(BIN) bench boot
	BOXD_BIN=$(CURDIR)/$(BIN) BOXD_E2E_GUESTTOOL=$(OUT)/guesttool $(BIN) nested --cpus $(BENCH_L1_CPUS) --out $(E2E_OUT) -- $(OUT)/e2e.test -test.run '^$$' -test.bench . -test.skip NestedFaults -test.benchtime 1x -test.v

.PHONY: demo
demo: deps build kernel initramfs image ## set up, start the daemon, boxd new, boxd exec a command, print its output
	bash scripts/demo.sh

.PHONY: clean
clean: ## remove build outputs (not the kernel cache)
	rm -rf bin out
