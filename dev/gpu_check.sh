#!/usr/bin/env bash
# The first thing to run on a machine with a GPU: the figures that matter most come first, each echoed as soon
# as it exists, and the whole run ends within 8 minutes (TOTAL_SECONDS) whatever a step does.
#   1. driver, GPU and nvcc versions
#   2. the builds, for the GPU found only (one architecture), all at once; then the test fixtures
#   3. ./qwen --bench --json per shape, 7B first, then 7B per quantized type (STEP_SECONDS each, default 120)
#   4. build/test_gpu: the GPU tests (doctest summary and the NMSE lines)
#   5. the workbench: the engine's kernel versions and the candidates waiting to be promoted (make -C dev run-engine)
#   6. compute-sanitizer on a subset of the GPU tests
# Full logs go to $OUT (or build/gpu-check); the summary ends the output.
#   dev/gpu_check.sh                      SHAPES="qwen2.5-0.5b" dev/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-build/gpu-check}
SHAPES=${SHAPES:-"qwen2-7b qwen2.5-1.5b qwen2.5-0.5b"}
QUANT_TYPES=${QUANT_TYPES:-"q4_k_m"}  # synthetic quantized Qwen2-7B benches after the bf16 shapes
STEP_SECONDS=${STEP_SECONDS:-120}
TOTAL_SECONDS=${TOTAL_SECONDS:-470}
mkdir -p "$LOG"
summary=()

# Runs a step under min(its limit, the time left before the deadline); keeps its output in $LOG/NAME.log.
step() {  # step NAME LIMIT COMMAND...
    local name=$1 limit=$2; shift 2
    local left=$((TOTAL_SECONDS - SECONDS - 5)) t0=$SECONDS
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
    if [ "$limit" -le 0 ]; then summary+=("SKIP  $name (no time left)"); return 1; fi
    if timeout -k 5 "$limit" "$@" > "$LOG/$name.log" 2>&1; then
        summary+=("ok    $name ($((SECONDS - t0)) s)")
    else
        summary+=("FAIL  $name ($((SECONDS - t0)) s of $limit, see $LOG/$name.log)")
        return 1
    fi
}

echo "== versions"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,compute_cap --format=csv 2>&1 | tee "$LOG/gpu.txt"
nvcc --version | tail -n 2 | tee -a "$LOG/gpu.txt"
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '. ')
ARCH=${ARCH:-90}

echo "== build (CUDA_ARCH=$ARCH)"
step build 240 make -j"$(nproc)" CUDA_ARCH="$ARCH" qwen build/test_gpu dev-all
tail -n 3 "$LOG/build.log"
# The test fixtures apart, so that a machine without the Python packages still benchmarks. The GGUF ones need the
# gguf package: an offline machine installs it from a folder of wheels (WHEELS, made beforehand with
# `python3 -m pip download --no-deps -d .whl gguf`).
WHEELS=${WHEELS:-.whl}
if ! python3 -c "import gguf" 2>/dev/null && ls "$WHEELS"/gguf-*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/qwen-site "$WHEELS"/gguf-*.whl &&
        export PYTHONPATH=/tmp/qwen-site${PYTHONPATH:+:$PYTHONPATH}
fi
step fixtures 120 make -j"$(nproc)" fixtures || tail -n 3 "$LOG/fixtures.log"

for s in $SHAPES; do
    echo "== bench $s"
    step "bench-$s" "$STEP_SECONDS" ./qwen --bench "$s" --json && cat "$LOG/bench-$s.log"
done
for t in $QUANT_TYPES; do
    echo "== bench qwen2-7b --type $t"
    step "bench-qwen2-7b-$t" "$STEP_SECONDS" ./qwen --bench qwen2-7b --type "$t" --json && cat "$LOG/bench-qwen2-7b-$t.log"
done

echo "== build/test_gpu"
step test_gpu "$STEP_SECONDS" ./build/test_gpu
grep -h "test cases\|assertions\|ERROR\|NMSE\|SKIPPED" "$LOG/test_gpu.log" | head -n 30

echo "== workbench: the engine's versions and the candidates"
step dev "$STEP_SECONDS" make -C dev CUDA_ARCH="$ARCH" run-engine
grep -v "^nvcc\|^make\|^mkdir\|^bin/" "$LOG/dev.log" | head -n 80

echo "== compute-sanitizer (kernels, no end-to-end engine cases)"
step memcheck "$STEP_SECONDS" compute-sanitizer --tool memcheck --error-exitcode 1 ./build/test_gpu \
    --test-case-exclude="gpu engine*"
tail -n 5 "$LOG/memcheck.log"

echo; printf '%s\n' "${summary[@]}"
echo "total $SECONDS s"
