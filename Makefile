# The two commands of the README, plus the build steps they share.
#   make demo   install missing packages, build, run the main job
#   make test   install missing packages, build, run the whole test suite
#   make gpu    (on the GPU machine) CUDA build against the LibTorch inside its PyTorch, then tests
BUILD ?= build
JOBS ?= $(shell nproc)
# make test SANITIZE=address,undefined: the whole CPU suite built with those sanitizers (own folder)
SANITIZE ?=
ifneq ($(SANITIZE),)
BUILD := build-sanitize
CMAKE_EXTRA := -DRAR_SANITIZE=$(SANITIZE) -DCMAKE_BUILD_TYPE=RelWithDebInfo
TEST_ENV := ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
endif

.PHONY: all deps build test demo gpu gpu-test clean fuzz cuda-check browser-test

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja: | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_EXTRA)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && $(TEST_ENV) ctest --output-on-failure -j $(JOBS) --timeout 1500

# libFuzzer targets (clang, ASan + UBSan) in build-fuzz/, FUZZ_SECONDS each (default 60): scripts/fuzz.sh
fuzz: deps
	@scripts/fuzz.sh

# The web page of `rar serve` in headless Chromium (installs chromium, chromium-driver and
# python3-selenium when missing); the screenshot lands in docs/serve-page.png.
browser-test: build
	@scripts/browser-test.sh $(BUILD)/rar

# Compiles the CUDA build's own sources (fused paths, kernels) here, without a GPU: scripts/check-cuda.sh
cuda-check: deps
	@scripts/check-cuda.sh

ifeq ($(GPU),)
demo: build
	@scripts/demo.sh $(BUILD)/rar
else
demo: gpu
	@GPU=1 scripts/demo.sh $(GPU_BUILD)/rar
endif

# GPU machine: see README "Building with CUDA". Needs libzip from carried .deb files (scripts/gpu-env.sh).
# GPU_TARGET=rar builds the binary alone (e.g. to start a long run before the tests are compiled).
GPU_BUILD ?= build-gpu
gpu:
	. scripts/gpu-env.sh && cmake -S . -B $(GPU_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DRAR_CUDA=ON \
	  -DCMAKE_PREFIX_PATH="$$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" \
	  -DRAR_NCCL_HINT="$$(python3 -c 'import torch,os,glob; r=os.path.dirname(os.path.dirname(torch.__file__)); print(next(iter([os.path.dirname(p) for p in glob.glob(r+"/nvidia/**/nccl.h", recursive=True)]), ""))')" \
	  $${RAR_SHARED_DIR:+-DRAR_SHARED_DIR=$$RAR_SHARED_DIR} && cmake --build $(GPU_BUILD) -j $(JOBS) \
	  $(if $(GPU_TARGET),--target $(GPU_TARGET))

gpu-test: gpu
	. scripts/gpu-env.sh && cd $(GPU_BUILD) && ctest --output-on-failure -j 4

clean:
	rm -rf $(BUILD) $(GPU_BUILD) build-sanitize build-fuzz
