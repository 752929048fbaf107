# pih-bridge: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := kernel

TARGET_SPEC := x86_64-pih.json
PROFILE     ?= release
KERNEL      := build/pih-bridge
KERNEL_SRC  := target/x86_64-pih/$(PROFILE)/pih-bridge
CARGO_KERNEL = RUSTC_BOOTSTRAP=1 cargo build -p pih-kernel \
	--target $(TARGET_SPEC) -Zbuild-std=core,alloc \
	-Zbuild-std-features=compiler-builtins-mem -Zjson-target-spec \
	$(if $(filter release,$(PROFILE)),--release,)
# Host tools that go into the dom0 initramfs (mkinitramfs.sh installs
# every file of build/tools/ into dom0's /usr/local/bin).
TOOLS       := flowgen pihctl irmin-graphql-double
TOOLS_SRC    = $${CARGO_TARGET_DIR:-target}/release
T ?=

.PHONY: help setup kernel tools run test host-test xen-test fuzz clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

setup: ## install what is missing (rustup component, Debian packages)
	@scripts/setup.sh

kernel: setup ## build the unikernel ELF at build/pih-bridge (default)
	$(CARGO_KERNEL)
	@mkdir -p build
	@cp $(KERNEL_SRC) $(KERNEL)
	@printf 'kernel: %s, %s bytes\n' $(KERNEL) "$$(stat -c %s $(KERNEL))"

tools: ## build the dom0 tools (flowgen, pihctl, irmin-graphql-double) into build/tools/
	cargo build --release $(addprefix -p ,$(TOOLS))
	@mkdir -p build/tools
	@for t in $(TOOLS); do cp "$(TOOLS_SRC)/$$t" build/tools/ || exit 1; done
	@printf 'tools: %s\n' "$$(cd build/tools && echo $(TOOLS))"

run: kernel tools ## boot Xen in QEMU: br0/br1, test hosts, an Irmin double, the bridge with irmin=; leaves you at a dom0 shell
	tests/xen/run.sh run

test: host-test xen-test ## everything: host unit tests, then the Xen-in-QEMU scenarios

host-test: setup ## cargo test of the platform-independent crates
	cargo test --workspace

xen-test: kernel tools ## Xen-in-QEMU scenarios (all, or one with T=<name>); V=1 streams the console
	PIH_QUIET=$(if $(V),0,1) tests/xen/run.sh test $(T)

fuzz: ## run every fuzz target for FUZZ_SECONDS (default 60) each
	scripts/fuzz.sh $${FUZZ_SECONDS:-60}

clean: ## remove build outputs (keeps the download cache in .cache)
	cargo clean
	rm -rf build
