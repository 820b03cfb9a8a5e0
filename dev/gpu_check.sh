#!/usr/bin/env bash
# Everything to run on a machine with a GPU, in one call: build, correctness (tests, compute-sanitizer),
# the end-to-end benchmark, per-kernel timings. Full logs go to $OUT (or build/gpu-check); the summary last.
# Each step has a time limit (STEP_SECONDS, default 240) so that one hang cannot eat the whole run.
#   dev/gpu_check.sh            # all shapes
#   SHAPES=qwen2.5-0.5b dev/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-build/gpu-check}
SHAPES=${SHAPES:-"qwen2.5-0.5b qwen2.5-1.5b qwen2-7b"}
STEP_SECONDS=${STEP_SECONDS:-240}
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,compute_cap --format=csv > "$LOG/gpu.txt" 2>&1
# Build for this GPU only (compute capability 9.0 -> 90): a third of the compile time of the default list.
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '. ')
ARCH=${ARCH:-90}
summary=()
step() {  # step NAME COMMAND...: runs it under the time limit, keeps its output, records pass/fail
    local name=$1; shift
    local t0=$SECONDS
    if timeout "$STEP_SECONDS" "$@" > "$LOG/$name.log" 2>&1; then
        summary+=("ok    $name ($((SECONDS - t0)) s)")
    else
        summary+=("FAIL  $name ($((SECONDS - t0)) s, see $LOG/$name.log)")
    fi
}
step build make -j"$(nproc)" CUDA_ARCH="$ARCH" qwen build/test_gpu fixtures
step test_gpu ./build/test_gpu
for s in $SHAPES; do step "bench-$s" ./qwen --bench "$s"; done
step dev make -C dev -j"$(nproc)" CUDA_ARCH="$ARCH" run
step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 ./build/test_gpu
cat "$LOG/gpu.txt"
echo; grep -h "doctest\] test cases\|doctest\] assertions\|ERROR\|worst NMSE" "$LOG/test_gpu.log" | head -20
for s in $SHAPES; do echo; tail -n 12 "$LOG/bench-$s.log"; done
echo; grep -v "^nvcc\|^make\|^mkdir\|^bin/" "$LOG/dev.log" | head -80
echo; printf '%s\n' "${summary[@]}"
