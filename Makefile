# Thin wrapper over CMake. `make demo` and `make test` do all set-up on a fresh Debian 12 machine.
JOBS ?= $(shell nproc)
BUILD ?= build
TEST_BUILD ?= build-asan
CMAKE_FLAGS ?=

.PHONY: all deps build demo test test-gpu plots bench data-smollm data-qwen data-mistral data-shipped test-dumper bundle clean

all: build

deps:
	@scripts/install_deps.sh

$(BUILD)/CMakeCache.txt:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory
	@cp -f $(BUILD)/sqexp ./sqexp

# Tests: a sanitized (ASan + UBSan) CPU build runs every `cpu` test; the release build is built
# too so that kernels/cuda compiles and links wherever nvcc exists.
$(TEST_BUILD)/CMakeCache.txt:
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSQEXP_SANITIZE=ON -DSQEXP_CUDA=OFF >/dev/null

test: build $(TEST_BUILD)/CMakeCache.txt
	@cmake --build $(TEST_BUILD) -j $(JOBS) -- --no-print-directory
	@scripts/python_env.sh >/dev/null
	@cd $(TEST_BUILD) && ctest -L cpu --output-on-failure -j $(JOBS)

# GPU agreement tests (CPU reference vs CUDA) on a machine with an NVIDIA GPU.
test-gpu: build
	@cd $(BUILD) && ctest -L gpu --output-on-failure

demo: build
	@./sqexp run configs/quick.ini

plots: build
	@scripts/plots.sh

bench: build
	@./sqexp bench

data-shipped:
	@scripts/make_data.sh shipped
data-smollm:
	@scripts/make_data.sh smollm
data-qwen:
	@scripts/make_data.sh qwen
# Mistral-7B-v0.3 is on no registry this project reaches: point MISTRAL_MODEL at a local HF folder.
data-mistral:
	@MISTRAL_MODEL=$(MISTRAL_MODEL) scripts/make_data.sh mistral
test-dumper:
	@scripts/make_data.sh test

# A folder with the binaries and every non-glibc, non-CUDA shared library they need, for the
# lent GPU machine (see docs/cuda.md).
bundle: build
	@scripts/bundle.sh

clean:
	rm -rf $(BUILD) $(TEST_BUILD) sqexp
