# qwen: `make` builds ./qwen (and ./qwen-server when libmicrohttpd and nlohmann-json are installed);
# `make test` builds and runs every test; `make deps` installs what the tests need (Debian/Ubuntu, as root).
# Works with or without a GPU at build and run time, and without the CUDA toolkit (then the C++ compiler builds
# the front ends with the CPU engine only).

# Build in parallel on every core unless the caller chose -j.
ifeq ($(filter -j%,$(MAKEFLAGS)),)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
endif

NVCC      ?= nvcc
CXX       ?= g++
CLANGXX   ?= clang++
PYTHON    ?= python3
# GPU architectures to compile for (compute capability x10): Ampere (80, 86) and Hopper (90).
CUDA_ARCH ?= 80 86 90
GENCODE   := $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) \
             -gencode arch=compute_$(lastword $(CUDA_ARCH)),code=compute_$(lastword $(CUDA_ARCH))
# Host code is built for this machine (-march=native: the CPU engine's dot products use its vector units);
# -ffp-contract=off keeps every path's float arithmetic identical (no fused multiply-add in some and not others).
NVFLAGS   ?= -O3 -std=c++17 $(GENCODE) -Xcompiler -Wall,-pthread,-march=native,-ffp-contract=off -diag-suppress 177
CXXFLAGS  ?= -O3 -march=native -ffp-contract=off -g -std=c++17 -Wall -Wextra -pthread
CUDA_LIBS := -lcublas
SAN_FLAGS := -O1 -g -std=c++17 -pthread -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_SECONDS ?= 60
GRAMMAR_FUZZ_SECONDS ?= 30

HEADERS   := qwen.hpp
FRONT     := cli.hpp bench.hpp qwen.cuh $(HEADERS)   # what main.cu and server.cu include
HAVE_NVCC := $(shell command -v $(NVCC) 2>/dev/null)
# The front ends without CUDA: main.cu / server.cu compiled as C++ (they include qwen.hpp alone then).
CPU_FLAGS := -O3 -march=native -ffp-contract=off -std=c++17 -Wall -pthread -x c++
SERVER_OK := $(shell pkg-config --exists libmicrohttpd nlohmann_json 2>/dev/null && echo yes)
SERVER_FLAGS = $(shell pkg-config --cflags --libs libmicrohttpd nlohmann_json 2>/dev/null)

BINS := qwen
ifeq ($(SERVER_OK),yes)
BINS += qwen-server
endif

all: $(BINS)

ifneq ($(HAVE_NVCC),)
qwen: main.cu $(FRONT)
	$(NVCC) $(NVFLAGS) -o $@ main.cu $(CUDA_LIBS)
qwen-server: server.cu $(FRONT) build/chat_html.h
	$(NVCC) $(NVFLAGS) -Ibuild -o $@ server.cu $(CUDA_LIBS) $(SERVER_FLAGS)
else
qwen: build/cpu/qwen
	cp $< $@
qwen-server: build/cpu/qwen-server
	cp $< $@
endif

# The CPU-only front ends (what `make` builds where there is no nvcc; `make test` tests ./qwen both ways).
build/cpu/qwen: main.cu $(FRONT) | build
	@mkdir -p build/cpu
	$(CXX) $(CPU_FLAGS) -o $@ main.cu
build/cpu/qwen-server: server.cu $(FRONT) build/chat_html.h | build
	@mkdir -p build/cpu
	$(CXX) $(CPU_FLAGS) -Ibuild -o $@ server.cu $(SERVER_FLAGS)

build/chat_html.h: web/chat.html | build
	cd web && xxd -i chat.html > ../$@

build:
	mkdir -p build

# ---- exported fixtures (the tiny random checkpoints and the real tokenizer) -------------------------
FIXTURES := build/tiny-qwen2.bin build/tiny-qwen15.bin build/tiny-qwen3.bin build/tokenizer-small.bin \
            build/qwen-tokenizer.bin
build/tiny-%.bin: tools/export.py test/data/tiny-%/model.safetensors | build
	$(PYTHON) tools/export.py test/data/tiny-$* $@
build/tokenizer-small.bin: tools/export.py test/data/tokenizer-small/tokenizer.json | build
	$(PYTHON) tools/export.py --tokenizer-only test/data/tokenizer-small $@
build/qwen-tokenizer.bin: tools/export.py test/data/qwen-tokenizer/tokenizer.json | build
	$(PYTHON) tools/export.py --tokenizer-only test/data/qwen-tokenizer $@

# ---- GGUF test files: llama.cpp's in test/data/gguf, and what test/gguf_fixtures.py derives from them -------
# (F16/F32 copies, a split file, small mixed-type files, reference decodings, and weights.bin exports of the BF16
# checkpoints; the script also documents how test/data/gguf was made). Needs numpy and gguf.
GGUF_DATA := $(wildcard test/data/gguf/*.gguf)
GGUF_MIX  := build/gguf/tiny-qwen2-mix.gguf build/gguf/tiny-qwen3-mix.gguf
GGUF_FIXTURES := build/gguf/variants.stamp $(GGUF_MIX) build/gguf/dequant.bin build/gguf/digests.json \
                 build/sq2.bin build/sq3.bin build/sq3-q8_0.bin
build/gguf/variants.stamp: test/gguf_fixtures.py $(GGUF_DATA) | build
	$(PYTHON) test/gguf_fixtures.py variants build/gguf test/data/gguf/sq2-BF16.gguf test/data/gguf/sq3-BF16.gguf \
	    test/data/gguf/sq3-Q4_K_M.gguf
	touch $@
$(GGUF_MIX) &: test/gguf_fixtures.py test/data/tiny-qwen2/model.safetensors test/data/tiny-qwen3/model.safetensors | build
	$(PYTHON) test/gguf_fixtures.py tiny build/gguf
build/gguf/dequant.bin: test/gguf_fixtures.py | build
	@mkdir -p build/gguf
	$(PYTHON) test/gguf_fixtures.py dequant $@
build/gguf/digests.json: test/gguf_fixtures.py build/gguf/variants.stamp $(GGUF_MIX)
	$(PYTHON) test/gguf_fixtures.py digests $@ $(GGUF_DATA) build/gguf/sq2-F16.gguf build/gguf/sq3-F16.gguf \
	    build/gguf/sq2-F32.gguf $(GGUF_MIX)
build/sq%.bin: tools/export.py test/gguf_fixtures.py test/data/gguf/sq%-BF16.gguf | build
	$(PYTHON) test/gguf_fixtures.py hf test/data/gguf/sq$*-BF16.gguf build/gguf/sq$*
	$(PYTHON) tools/export.py build/gguf/sq$* $@
build/sq3-q8_0.bin: build/sq3.bin   # weights.bin version 2: the exporter's Q8_0 of the same checkpoint
	$(PYTHON) tools/export.py --quant q8_0 build/gguf/sq3 $@

fixtures: $(FIXTURES) $(GGUF_FIXTURES)

# ---- C++ tests (doctest) ------------------------------------------------------------------------
CPU_TESTS := $(filter-out test/test_main.cpp,$(wildcard test/test_*.cpp))
build/obj/%.o: test/%.cpp test/fixtures.hpp $(HEADERS) | build
	@mkdir -p build/obj
	$(CXX) $(CXXFLAGS) -c -o $@ $<
build/test_cpu: build/obj/test_main.o $(patsubst test/%.cpp,build/obj/%.o,$(CPU_TESTS))
	$(CXX) $(CXXFLAGS) -o $@ $^

# The loaders, the tokenizer, the scheduler and the grammars under AddressSanitizer + UndefinedBehaviorSanitizer
# (corrupt files, odd input, the KV blocks' bookkeeping, hostile grammars and schemas).
ASAN_TESTS := test/test_main.cpp test/test_model.cpp test/test_gguf_corrupt.cpp test/test_tokenizer.cpp test/test_batch.cpp \
              test/test_grammar.cpp
build/test_asan: $(ASAN_TESTS) $(HEADERS) | build
	$(CXX) $(SAN_FLAGS) -o $@ $(ASAN_TESTS)

DEV_CANDIDATES := dev/attention_prefill_v1.cuh dev/sample_candidates.cuh dev/matvec_quant.cuh   # earlier versions and candidates, tested here
build/test_gpu: test/test_gpu.cu test/test_main.cpp test/fixtures.hpp $(DEV_CANDIDATES) $(FRONT) | build
	$(NVCC) $(NVFLAGS) -I. -o $@ test/test_gpu.cu test/test_main.cpp $(CUDA_LIBS)

# The same GPU tests on the CPU: qwen.cuh compiled as C++ against an emulated device (test/emu: every thread a
# fiber, varying schedules, every load and store checked for races, the CUDA runtime and cuBLAS on host memory)
# under ASan + UBSan, by clang (its -fsanitize-coverage hooks every load and store). The launches
# `k<<<grid, block, smem, stream>>>(...)` and the `__shared__` declarations are rewritten for it first.
# cuda_emu.o, which holds those hooks, is built without them.
CUDA_INC  := $(dir $(shell command -v $(NVCC) 2>/dev/null))../include
EMU_CXX   ?= $(CLANGXX)
EMU_BASE  := -g -std=c++17 -pthread -Wall -Wno-unknown-pragmas -fsanitize=address,undefined \
             -fno-sanitize-recover=all -isystem $(CUDA_INC) -include test/emu/cuda_emu.hpp
EMU_FLAGS := -O1 $(EMU_BASE) -fsanitize-coverage=func,inline-bool-flag,trace-loads,trace-stores
EMU_REWRITE := perl -0pe 's/(\w+(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(/::qwen_emu::launch($$1, "$$1", $$2)(/gs; \
    s/extern __shared__ (?:__align__\(\d+\) )?(\w+) (\w+)\[\];/$$1* $$2 = ::qwen_emu::dynamic_smem<$$1>();/g; \
    s/__shared__ ([\w:<>, ]+?)\s+(\w+)((?:\[[^\]]+\])*);/static char qwen_emu_key_$$2; \
        auto& $$2 = ::qwen_emu::static_smem<$$1$$3>(&qwen_emu_key_$$2, "$$2");/g; \
    s/\#include <cub\/cub.cuh>//'
build/emu/%: % Makefile | build
	@mkdir -p $(dir $@)
	{ echo '#line 1 "$<"'; $(EMU_REWRITE) $<; } > $@
build/emu/cuda_emu.o: test/emu/cuda_emu.cpp test/emu/cuda_emu.hpp | build
	@mkdir -p build/emu
	$(EMU_CXX) -O2 $(EMU_BASE) -c -o $@ test/emu/cuda_emu.cpp
EMU_HEADERS := build/emu/qwen.cuh build/emu/cli.hpp build/emu/bench.hpp build/emu/cuda_emu.o test/emu/cuda_emu.hpp \
               $(HEADERS)
# The emulator's own tests: barriers, shuffles, races, schedules, poison, graph capture, the faults it must report.
build/test_emu: build/emu/test/emu/test_emu.cpp test/test_main.cpp build/emu/cuda_emu.o test/emu/cuda_emu.hpp
	$(EMU_CXX) $(EMU_FLAGS) -o $@ build/emu/test/emu/test_emu.cpp test/test_main.cpp build/emu/cuda_emu.o
# ./qwen on the emulated device (its GPU path end to end: test/test_cli_gpu.py).
build/qwen_emu: build/emu/main.cu $(EMU_HEADERS)
	$(EMU_CXX) $(EMU_FLAGS) -Ibuild/emu -I. -o $@ -x c++ build/emu/main.cu -x none build/emu/cuda_emu.o
# qwen-server on the emulated device (test/test_server_gpu.py); only where its libraries are installed.
build/qwen-server_emu: build/emu/server.cu build/chat_html.h $(EMU_HEADERS)
	$(EMU_CXX) $(EMU_FLAGS) -Ibuild/emu -Ibuild -I. -o $@ -x c++ build/emu/server.cu -x none build/emu/cuda_emu.o \
	    $(SERVER_FLAGS)
build/test_gpu_emu: test/test_gpu.cu test/test_main.cpp test/fixtures.hpp $(EMU_HEADERS) \
                    $(addprefix build/emu/,$(DEV_CANDIDATES))
	$(EMU_CXX) $(EMU_FLAGS) -Ibuild/emu -I. -o $@ -x c++ test/test_gpu.cu -x none test/test_main.cpp build/emu/cuda_emu.o

# Reads lines of hex-encoded UTF-8 on stdin, prints the ids of each (for the random comparison with HF).
build/tokenize_lines: test/tokenize_lines.cpp $(HEADERS) | build
	$(CXX) $(CXXFLAGS) -o $@ test/tokenize_lines.cpp

# Answers under a JSON Schema from the CPU engine, one JSON line each (test_grammar_schemas.py validates them).
build/grammar_sample: test/grammar_sample.cpp $(HEADERS) | build
	$(CXX) $(CXXFLAGS) -o $@ test/grammar_sample.cpp

# Grammar token-mask cost per token (median, p99, max µs on one core) on the real Qwen vocabulary.
build/grammar_bench: dev/grammar_bench.cpp $(HEADERS) | build
	$(CXX) $(CXXFLAGS) -o $@ dev/grammar_bench.cpp
bench-grammar: build/grammar_bench build/qwen-tokenizer.bin
	./build/grammar_bench build/qwen-tokenizer.bin

# Tokenizer throughput (MB/s on one core) for English, Chinese and code on the real Qwen tokenizer.
build/tokenizer_bench: dev/tokenizer_bench.cpp $(HEADERS) | build
	$(CXX) $(CXXFLAGS) -o $@ dev/tokenizer_bench.cpp
bench-tokenizer: build/tokenizer_bench build/qwen-tokenizer.bin
	./build/tokenizer_bench build/qwen-tokenizer.bin

build/fuzz_loader: test/fuzz_loader.cpp $(HEADERS) | build
	$(CLANGXX) -O1 -g -std=c++17 -fsanitize=fuzzer,address,undefined -o $@ test/fuzz_loader.cpp
build/fuzz_grammar: test/fuzz_grammar.cpp $(HEADERS) | build
	$(CLANGXX) -O1 -g -std=c++17 -fsanitize=fuzzer,address,undefined -o $@ test/fuzz_grammar.cpp

# A bounded fuzzing run of the loader, seeded with the exported fixtures and the saved regressions.
define run_fuzz
	@mkdir -p build/fuzz-corpus
	@cp $(FIXTURES) $(GGUF_MIX) build/fuzz-corpus/
	@echo "fuzzing the loader for $(FUZZ_SECONDS) s (log: build/fuzz.log)"
	@./build/fuzz_loader -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=400000 -artifact_prefix=build/ \
	    build/fuzz-corpus test/fuzz-regressions > build/fuzz.log 2>&1 || { tail -n 60 build/fuzz.log; exit 1; }
	@tail -n 1 build/fuzz.log
endef

# The same for the grammar front ends (GBNF, JSON Schema, regex), seeded with test/fuzz-grammar/.
define run_fuzz_grammar
	@mkdir -p build/fuzz-grammar-corpus
	@echo "fuzzing the grammars for $(GRAMMAR_FUZZ_SECONDS) s (log: build/fuzz-grammar.log)"
	@./build/fuzz_grammar -max_total_time=$(GRAMMAR_FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=4096 -timeout=20 \
	    -artifact_prefix=build/ build/fuzz-grammar-corpus test/fuzz-grammar > build/fuzz-grammar.log 2>&1 \
	    || { tail -n 60 build/fuzz-grammar.log; exit 1; }
	@tail -n 1 build/fuzz-grammar.log
endef

fuzz: build/fuzz_loader build/fuzz_grammar fixtures
	$(run_fuzz)
	$(run_fuzz_grammar)

# The GPU tests: on a GPU when there is one (build/test_gpu says so and skips otherwise), and on the emulated
# device, which needs the CUDA toolkit's headers and the x86-64 stack switch of test/emu.
ifeq ($(HAVE_NVCC),)
GPU_TEST :=
run_gpu = @echo "SKIPPED: the GPU tests need the CUDA toolkit (nvcc)"
else ifneq ($(shell uname -m),x86_64)
GPU_TEST := build/test_gpu dev-all
run_gpu = ./build/test_gpu && echo "SKIPPED: the emulated GPU tests run on x86-64 only"
else
GPU_TEST := build/test_gpu build/test_emu build/test_gpu_emu build/qwen_emu dev-all \
            $(if $(filter yes,$(SERVER_OK)),build/qwen-server_emu)
# Every launch of the emulated GPU tests runs under one schedule (the kinds take turns) with every access
# race-checked; the kernel tests (not the engine's) also run every launch twice, compared byte for byte (test/emu).
EMU_TWICE := gpu: rmsnorm*,gpu: swiglu*,gpu: matvec*,gpu: gemm*,gpu: the fused dequantize-matvec*,gpu: embedding*
EMU_TWICE := $(EMU_TWICE),gpu: qkv*,gpu: argmax*,gpu: mask_logits*,gpu: sample_candidates*,gpu: select_token*
EMU_TWICE := $(EMU_TWICE),gpu: batched decode attention*,gpu: dev/ candidate v2*
run_gpu = ./build/test_gpu && ASAN_OPTIONS=detect_leaks=1 ./build/test_emu && \
          ASAN_OPTIONS=detect_leaks=1 ./build/test_gpu_emu && \
          QWEN_EMU_SCHEDULES=2 ASAN_OPTIONS=detect_leaks=1 ./build/test_gpu_emu -tc='$(EMU_TWICE)'
endif

# Every pytest test must run (a skip fails, see test/conftest.py) where everything can be built: with nvcc on x86-64.
PYTEST_STRICT := $(if $(filter build/test_gpu_emu,$(GPU_TEST)),1,0)

test: all build/cpu/qwen build/test_cpu build/test_asan $(GPU_TEST) build/tokenize_lines build/grammar_sample \
      build/fuzz_loader build/fuzz_grammar fixtures
	./build/test_cpu
	ASAN_OPTIONS=detect_leaks=1 ./build/test_asan
	$(run_gpu)
	$(run_fuzz)
	$(run_fuzz_grammar)
	QWEN_TEST_STRICT=$(PYTEST_STRICT) $(PYTHON) -m pytest -q test
	QWEN_TEST_STRICT=1 QWEN_BIN=build/cpu/qwen QWEN_NO_CUDA=1 $(PYTHON) -m pytest -q test/test_cli.py  # no CUDA

# What the build and the tests need on Debian/Ubuntu (the CUDA toolkit aside), and the Python test packages.
# libclang-rt-dev: clang's sanitizer and libFuzzer runtimes (only recommended by clang, and recommends are off).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEB_PACKAGES := build-essential pkg-config python3 python3-pip clang libclang-rt-dev xxd curl ca-certificates \
                doctest-dev libmicrohttpd-dev nlohmann-json3-dev chromium fonts-wqy-microhei
PY_PACKAGES := numpy tokenizers pytest openai playwright jinja2 jsonschema gguf prometheus_client
deps:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES) >/dev/null
	$(PYTHON) -m pip install -q --disable-pip-version-check --break-system-packages $(PY_PACKAGES)

# The kernel workbench (dev/), built for CUDA_ARCH's first architecture (dev/gpu_check.sh uses this; `make test`
# builds it too, so that a workbench program that no longer compiles is found before a GPU run needs it).
dev-all:
	$(MAKE) -C dev CUDA_ARCH=$(firstword $(CUDA_ARCH)) all

# compute-sanitizer over the GPU tests (needs a GPU).
memcheck: build/test_gpu
	compute-sanitizer --tool memcheck --error-exitcode 1 ./build/test_gpu

demo: qwen build/tiny-qwen2.bin
	@echo "demo: a tiny model with random weights (its text is gibberish by design)"
	./qwen -m build/tiny-qwen2.bin -p "你好" -n 32 --temp 0

clean:
	rm -rf build qwen qwen-server

.PHONY: all fixtures test deps fuzz memcheck demo clean bench-tokenizer bench-grammar dev-all
