#!/usr/bin/env bash
# Everything to run on a machine with a GPU, in one call: build, correctness (tests, compute-sanitizer),
# per-kernel timings, the end-to-end benchmark. Full logs go to $OUT (or build/gpu-check); the summary last.
#   dev/gpu_check.sh            # all shapes
#   SHAPES=qwen2.5-0.5b dev/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-build/gpu-check}
SHAPES=${SHAPES:-"qwen2.5-0.5b qwen2.5-1.5b qwen2-7b"}
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$LOG/gpu.txt" 2>&1
summary=()
step() {  # step NAME COMMAND...: runs it, keeps its output, records pass/fail
    local name=$1; shift
    if "$@" > "$LOG/$name.log" 2>&1; then summary+=("ok    $name"); else summary+=("FAIL  $name (see $LOG/$name.log)"); fi
}
step build make -j4 qwen build/test_gpu fixtures
step test_gpu ./build/test_gpu
step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 ./build/test_gpu
step dev make -C dev run
for s in $SHAPES; do step "bench-$s" ./qwen --bench "$s"; done
cat "$LOG/gpu.txt"
for s in $SHAPES; do echo; tail -n 12 "$LOG/bench-$s.log"; done
echo; grep -h "FAILED\|GB/s" "$LOG/dev.log" | head -40
echo; printf '%s\n' "${summary[@]}"
