# qwen: `make` builds ./qwen (and ./qwen-server when cpp-httplib and nlohmann-json are installed);
# `make test` builds and runs every test. Works with or without a GPU at build and run time.

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

HEADERS   := qwen.hpp
SERVER_OK := $(shell pkg-config --exists cpp-httplib nlohmann_json 2>/dev/null && echo yes)
SERVER_FLAGS = $(shell pkg-config --cflags --libs cpp-httplib nlohmann_json 2>/dev/null)

BINS := qwen
ifeq ($(SERVER_OK),yes)
BINS += qwen-server
endif

all: $(BINS)

qwen: main.cu qwen.cuh $(HEADERS)
	$(NVCC) $(NVFLAGS) -o $@ main.cu $(CUDA_LIBS)

build/chat_html.h: web/chat.html | build
	cd web && xxd -i chat.html > ../$@

qwen-server: server.cu qwen.cuh $(HEADERS) build/chat_html.h
	$(NVCC) $(NVFLAGS) -Ibuild -o $@ server.cu $(CUDA_LIBS) $(SERVER_FLAGS)

build:
	mkdir -p build

# ---- exported fixtures (the tiny random checkpoints and the real tokenizer) -------------------------
FIXTURES := build/tiny-qwen2.bin build/tiny-qwen15.bin build/tiny-qwen3.bin build/tokenizer-small.bin \
            build/qwen-tokenizer.bin
fixtures: $(FIXTURES)
build/tiny-%.bin: tools/export.py test/data/tiny-%/model.safetensors | build
	$(PYTHON) tools/export.py test/data/tiny-$* $@
build/tokenizer-small.bin: tools/export.py test/data/tokenizer-small/tokenizer.json | build
	$(PYTHON) tools/export.py --tokenizer-only test/data/tokenizer-small $@
build/qwen-tokenizer.bin: tools/export.py test/data/qwen-tokenizer/tokenizer.json | build
	$(PYTHON) tools/export.py --tokenizer-only test/data/qwen-tokenizer $@

# ---- C++ tests (doctest) ------------------------------------------------------------------------
CPU_TESTS := $(filter-out test/test_main.cpp,$(wildcard test/test_*.cpp))
build/obj/%.o: test/%.cpp test/fixtures.hpp $(HEADERS) | build
	@mkdir -p build/obj
	$(CXX) $(CXXFLAGS) -c -o $@ $<
build/test_cpu: build/obj/test_main.o $(patsubst test/%.cpp,build/obj/%.o,$(CPU_TESTS))
	$(CXX) $(CXXFLAGS) -o $@ $^

# The loader and tokenizer under AddressSanitizer + UndefinedBehaviorSanitizer (corrupt files, odd input).
build/test_asan: test/test_main.cpp test/test_model.cpp test/test_tokenizer.cpp $(HEADERS) | build
	$(CXX) $(SAN_FLAGS) -o $@ test/test_main.cpp test/test_model.cpp test/test_tokenizer.cpp

build/test_gpu: test/test_gpu.cu test/test_main.cpp test/fixtures.hpp qwen.cuh $(HEADERS) | build
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
# The emulator's own tests: barriers, shuffles, races, schedules, poison, graph capture, the faults it must report.
build/test_emu: build/emu/test/emu/test_emu.cpp test/test_main.cpp build/emu/cuda_emu.o test/emu/cuda_emu.hpp
	$(EMU_CXX) $(EMU_FLAGS) -o $@ build/emu/test/emu/test_emu.cpp test/test_main.cpp build/emu/cuda_emu.o
# ./qwen on the emulated device (its GPU path end to end: test/test_cli_gpu.py).
build/qwen_emu: build/emu/main.cu build/emu/qwen.cuh build/emu/cuda_emu.o test/emu/cuda_emu.hpp $(HEADERS)
	$(EMU_CXX) $(EMU_FLAGS) -Ibuild/emu -I. -o $@ -x c++ build/emu/main.cu -x none build/emu/cuda_emu.o
# qwen-server on the emulated device (test/test_server_gpu.py); only where its libraries are installed.
build/qwen-server_emu: build/emu/server.cu build/emu/qwen.cuh build/chat_html.h build/emu/cuda_emu.o \
                       test/emu/cuda_emu.hpp $(HEADERS)
	$(EMU_CXX) $(EMU_FLAGS) -Ibuild/emu -Ibuild -I. -o $@ -x c++ build/emu/server.cu -x none build/emu/cuda_emu.o \
	    $(SERVER_FLAGS)
build/test_gpu_emu: test/test_gpu.cu test/test_main.cpp test/fixtures.hpp build/emu/cuda_emu.o test/emu/cuda_emu.hpp \
                    build/emu/qwen.cuh $(HEADERS)
	$(EMU_CXX) $(EMU_FLAGS) -Ibuild/emu -I. -o $@ -x c++ test/test_gpu.cu -x none test/test_main.cpp build/emu/cuda_emu.o

# Reads lines of hex-encoded UTF-8 on stdin, prints the ids of each (for the random comparison with HF).
build/tokenize_lines: test/tokenize_lines.cpp $(HEADERS) | build
	$(CXX) $(CXXFLAGS) -o $@ test/tokenize_lines.cpp

# Tokenizer throughput (MB/s on one core) for English, Chinese and code on the real Qwen tokenizer.
build/tokenizer_bench: dev/tokenizer_bench.cpp $(HEADERS) | build
	$(CXX) $(CXXFLAGS) -o $@ dev/tokenizer_bench.cpp
bench-tokenizer: build/tokenizer_bench build/qwen-tokenizer.bin
	./build/tokenizer_bench build/qwen-tokenizer.bin

build/fuzz_loader: test/fuzz_loader.cpp $(HEADERS) | build
	$(CLANGXX) -O1 -g -std=c++17 -fsanitize=fuzzer,address,undefined -o $@ test/fuzz_loader.cpp

# A bounded fuzzing run of the loader, seeded with the exported fixtures and the saved regressions.
define run_fuzz
	@mkdir -p build/fuzz-corpus
	@cp $(FIXTURES) build/fuzz-corpus/
	@echo "fuzzing the loader for $(FUZZ_SECONDS) s (log: build/fuzz.log)"
	@./build/fuzz_loader -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=400000 -artifact_prefix=build/ \
	    build/fuzz-corpus test/fuzz-regressions > build/fuzz.log 2>&1 || { tail -n 60 build/fuzz.log; exit 1; }
	@tail -n 1 build/fuzz.log
endef

fuzz: build/fuzz_loader fixtures
	$(run_fuzz)

# The emulated GPU tests need the x86-64 stack switch of test/emu; elsewhere they are skipped with a line.
ifeq ($(shell uname -m),x86_64)
EMU_TEST := build/test_emu build/test_gpu_emu build/qwen_emu $(if $(filter yes,$(SERVER_OK)),build/qwen-server_emu)
# Every launch of the GPU tests runs under one schedule (the kinds take turns) with every access race-checked;
# the kernel tests (not the engine's) also run every launch twice, compared byte for byte (see test/emu).
EMU_TWICE := gpu: rmsnorm*,gpu: swiglu*,gpu: matvec*,gpu: qkv*,gpu: argmax*,gpu: sample_candidates*,gpu: select_token*
run_emu = ASAN_OPTIONS=detect_leaks=1 ./build/test_emu && ASAN_OPTIONS=detect_leaks=1 ./build/test_gpu_emu && \
    QWEN_EMU_SCHEDULES=2 ASAN_OPTIONS=detect_leaks=1 ./build/test_gpu_emu -tc='$(EMU_TWICE)'
else
EMU_TEST :=
run_emu = @echo "SKIPPED: the emulated GPU tests run on x86-64 only"
endif

test: all build/test_cpu build/test_asan build/test_gpu $(EMU_TEST) build/tokenize_lines build/fuzz_loader fixtures
	./build/test_cpu
	ASAN_OPTIONS=detect_leaks=1 ./build/test_asan
	./build/test_gpu
	$(run_emu)
	$(run_fuzz)
	$(PYTHON) -m pytest -q test

# compute-sanitizer over the GPU tests (needs a GPU).
memcheck: build/test_gpu
	compute-sanitizer --tool memcheck --error-exitcode 1 ./build/test_gpu

demo: qwen build/tiny-qwen2.bin
	@echo "demo: a tiny model with random weights (its text is gibberish by design)"
	./qwen -m build/tiny-qwen2.bin -p "你好" -n 32 --temp 0

clean:
	rm -rf build qwen qwen-server

.PHONY: all fixtures test fuzz memcheck demo clean bench-tokenizer
