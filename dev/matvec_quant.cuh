// matvec_quant: a candidate (v2) for the engine's fused dequantize-matvec of the block types (Q8_0 .. Q6_K) and its
// prefill decoding to bf16, kept here until measured on a GPU (./dev/bin/matvec_quant 1 vs 2); the tests run it on
// every build (test/test_gpu.cu: the same results as the CPU, and dequant_group equal to the CPU's decoders bit
// for bit).
//
// Why: on an H200 the engine's quantized decode took ~21 ms per Qwen2-7B step whatever the type (q4_k_m 4.4 GB or
// q8_0 7.5 GB), so the time goes with the number of weights, not their bytes. In v1 each lane decodes a whole
// chunk (32 to 128 consecutive values) and multiplies it by the input value by value, so at each step the 32 lanes
// of a warp read x at 32 addresses 128 to 512 bytes apart: 32 separate L1 wavefronts (global x) or a 32-way bank
// conflict (x staged in shared memory) for every 32 weights. That is about one SM cycle per weight: 7.6e9 weights
// / (132 SMs x 1.98 GHz) = 29 ms, the size of what was measured (and 0.49e9 weights = 1.9 ms for the 0.5B, measured
// 2.2 ms). The prefill's dequantize_bf16 has the same pattern in its stores (a thread writes 64 values in a row,
// threads 128 bytes apart).
//
// v2: lane k of a warp takes the k-th group of 8 consecutive values (dequant_group: 8 values that share one scale
// in every type), so a warp's 32 lanes cover 256 consecutive values: x comes as two 16-byte loads per lane, whole
// 128-byte lines across the warp, and in shared memory without bank conflicts. The group's 8 quant bytes are read with
// 2-byte loads (every field the decoders read 8 at a time starts on an even byte). The window of a row is loaded
// into registers first (8 independent 16-byte loads per lane) and then stored to shared memory, so the loads are
// in flight together. dequantize_bf16 v2: one thread per group, one 16-byte store of 8 bf16 values.
//
// To promote: dequant_group replaces the chunk decoders of qwen.hpp (the CPU reference decodes group by group;
// dtype_info's chunk becomes 8), warp_rows_groups replaces warp_rows_blocks, dequantize_bf16_v2_kernel replaces
// dequantize_bf16_kernel for the block types; the launchers stay.
#pragma once
#include "../qwen.cuh"

namespace qwen {
namespace gpu {

// ============================================================================
// Decoding 8 values at a time
// ============================================================================

// The 8 bytes p[0..8) (p 2-byte aligned), byte i in bits 8i .. 8i + 7 (little-endian, as CUDA and x86 are).
QWEN_HOST_DEVICE inline uint64_t ld8(const uint8_t* p) {
#ifdef __CUDA_ARCH__
    const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
    return uint64_t(h[0]) | uint64_t(h[1]) << 16 | uint64_t(h[2]) << 32 | uint64_t(h[3]) << 48;
#else
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#endif
}
QWEN_HOST_DEVICE inline int byte_of(uint64_t v, int i) { return int(v >> (8 * i)) & 255; }
QWEN_HOST_DEVICE inline uint32_t ld4(const uint8_t* p) { return uint32_t(rd16(p)) | uint32_t(rd16(p + 2)) << 16; }

// v[i] = value 8g + i of one block of type T (g < block / 8), the same float as qwen.hpp's decoder of T gives it
// (same operations in the same order). Block layouts: see the decoders in qwen.hpp.
template <DType T>
QWEN_HOST_DEVICE inline void dequant_group(const uint8_t* b, int g, float (&v)[8]) {
    if constexpr (T == DT_Q8_0) {  // bytes 2 + 8g ..: int8 values
        float d = rd_f16(b);
        uint64_t q = ld8(b + 2 + 8 * g);
        for (int i = 0; i < 8; i++) v[i] = d * float(int8_t(byte_of(q, i)));
    } else if constexpr (T == DT_Q4_0) {  // values 0..15: low nibbles of q[0..16), 16..31: high nibbles
        float d = rd_f16(b);
        uint64_t q = ld8(b + 2 + 8 * (g & 1));
        int sh = g >= 2 ? 4 : 0;
        for (int i = 0; i < 8; i++) v[i] = d * float(((byte_of(q, i) >> sh) & 15) - 8);
    } else if constexpr (T == DT_Q5_0 || T == DT_Q5_1) {  // Q4_0's nibbles, plus bit 8g + i of h
        constexpr bool MIN = T == DT_Q5_1;
        float d = rd_f16(b), m = MIN ? rd_f16(b + 2) : 0.0f;
        uint32_t h = ld4(b + (MIN ? 4 : 2));
        uint64_t q = ld8(b + (MIN ? 8 : 6) + 8 * (g & 1));
        int sh = g >= 2 ? 4 : 0;
        for (int i = 0; i < 8; i++) {
            int x = ((byte_of(q, i) >> sh) & 15) | int((h >> (8 * g + i)) & 1) << 4;
            v[i] = MIN ? d * float(x) + m : d * float(x - 16);
        }
    } else if constexpr (T == DT_Q4_K || T == DT_Q5_K) {
        // values 64c + 32hi + i0 + i: nibble hi of q[32c + i0 + i], sub-block j = 2c + hi (Q5_K: bit j of h[i0 + i])
        int c = g / 8, hi = (g / 4) & 1, i0 = 8 * (g & 3), j = 2 * c + hi;
        float d = rd_f16(b), dmin = rd_f16(b + 2), sc, m;
        k_scale_min(b + 4, j, sc, m);
        float dj = d * sc, nj = dmin * m;
        uint64_t q = ld8(b + (T == DT_Q4_K ? 16 : 48) + 32 * c + i0);
        uint64_t h = T == DT_Q5_K ? ld8(b + 16 + i0) : 0;
        for (int i = 0; i < 8; i++) {
            int x = (byte_of(q, i) >> (4 * hi)) & 15;
            if (T == DT_Q5_K) x |= ((byte_of(h, i) >> j) & 1) << 4;
            v[i] = dj * float(x) - nj;
        }
    } else if constexpr (T == DT_Q6_K) {
        // values 128c + 32k + i0 + i: low bits in ql[64c + 32(k & 1) + i0 + i] (k < 2: low nibble, else high),
        // high bits 2k, 2k + 1 of qh[32c + i0 + i]; scale (128c + 32k + i0) / 16
        int c = g / 16, k = (g / 4) & 3, i0 = 8 * (g & 3);
        float ds = rd_f16(b + 208) * float(int8_t(b[192 + 8 * c + 2 * k + i0 / 16]));
        uint64_t lo = ld8(b + 64 * c + 32 * (k & 1) + i0), hb = ld8(b + 128 + 32 * c + i0);
        for (int i = 0; i < 8; i++) {
            int x = (((byte_of(lo, i) >> (k < 2 ? 0 : 4)) & 15) | ((byte_of(hb, i) >> (2 * k)) & 3) << 4) - 32;
            v[i] = ds * float(x);
        }
    }
}

// ============================================================================
// The decode matvec, v2
// ============================================================================

// NR dot products of rows of a block type with the input xs (shared or global memory, 16-byte aligned), by one
// warp. The row goes through the warp's window (MV_WINDOW 16-byte words of shared memory) as in v1; in each
// window, lane l decodes groups l, l + 32, ... (group k: the window's values 8k .. 8k + 7).
template <DType T, int NR>
__device__ void warp_rows_groups(const uint8_t* const (&rows)[NR], const float* xs, int cols, float (&out)[NR],
                                 uint4* win) {
    constexpr DTypeInfo ti = dtype_info(T);
    constexpr int G = ti.block / 8;           // groups per block
    constexpr int LOADS = MV_WINDOW / 32;     // window words per lane
    const int lane = threadIdx.x % 32, n_blocks = cols / ti.block;
#pragma unroll
    for (int r = 0; r < NR; r++) {
        float a = 0;
        for (int b0 = 0; b0 < n_blocks;) {
            const uint8_t* first = rows[r] + size_t(b0) * ti.bytes;
            const uint4* base = reinterpret_cast<const uint4*>(reinterpret_cast<uintptr_t>(first) & ~uintptr_t(15));
            const int skew = int(first - reinterpret_cast<const uint8_t*>(base));
            const int nb = min(n_blocks - b0, (MV_WINDOW * 16 - skew) / ti.bytes);  // whole blocks in the window
            const int words = (skew + nb * ti.bytes + 15) / 16;
            uint4 word[LOADS];
#pragma unroll
            for (int u = 0; u < LOADS; u++)
                if (lane + 32 * u < words) word[u] = __ldcs(base + lane + 32 * u);
            __syncwarp();  // the previous window is no longer read
#pragma unroll
            for (int u = 0; u < LOADS; u++)
                if (lane + 32 * u < words) win[lane + 32 * u] = word[u];
            __syncwarp();
            const uint8_t* w = reinterpret_cast<const uint8_t*>(win) + skew;
            const float4* x4 = reinterpret_cast<const float4*>(xs + size_t(b0) * ti.block);
            const int s = (lane >> 2) & 1;  // lanes 4-7 of each 8 read their second half first: see below
            for (int k = lane; k < nb * G; k += 32) {
                float v[8];
                dequant_group<T>(w + (k / G) * ti.bytes, k % G, v);
                // A 16-byte load is served 8 lanes at a time; 8 lanes at a 32-byte stride reading the same half
                // would hit each bank twice. Alternating the half in lanes 4-7 spreads the 8 over all 32 banks.
                float4 p = x4[2 * k + s], q = x4[2 * k + 1 - s];
                if (s) {
                    float4 t = p;
                    p = q, q = t;
                }
                a = fmaf(v[0], p.x, a), a = fmaf(v[1], p.y, a), a = fmaf(v[2], p.z, a), a = fmaf(v[3], p.w, a);
                a = fmaf(v[4], q.x, a), a = fmaf(v[5], q.y, a), a = fmaf(v[6], q.z, a), a = fmaf(v[7], q.w, a);
            }
            b0 += nb;
        }
        out[r] = warp_sum(a);
    }
}

// The engine's matvec_kernel with warp_rows_groups for the rows (same epilogues, staging and grid).
// grid (ceil(rows / rows_per_block)), block 32 * MV_WARPS, smem matvec_smem(T, NORM, cols) bytes
template <DType T, bool NORM, int OUT>
static __global__ void __launch_bounds__(32 * MV_WARPS)
    matvec_v2_kernel(MatRows W, const float* __restrict__ x, const float* __restrict__ g, float eps,
                     float* __restrict__ y, int rows_per_block) {
    extern __shared__ float4 smem4_v2[];
    const int rows = OUT == MV_SWIGLU ? W.rows[0] : W.n_rows, cols = W.cols;
    const float* xs = x;
    if (NORM) {
        stage_norm_input(x, g, eps, cols, reinterpret_cast<float*>(smem4_v2));
        xs = reinterpret_cast<const float*>(smem4_v2);
    }
    int warp = threadIdx.x / 32, r_end = min(rows, (blockIdx.x + 1) * rows_per_block);
    uint4* win = reinterpret_cast<uint4*>(smem4_v2 + (NORM ? ceil_div(cols, 4) : 0)) + warp * MV_WINDOW;
    for (int r = blockIdx.x * rows_per_block + warp; r < r_end; r += MV_WARPS) {
        if (OUT == MV_SWIGLU) {
            const uint8_t* rr[2] = {W.data[0] + uint64_t(r) * W.row_bytes, W.data[1] + uint64_t(r) * W.row_bytes};
            float d[2];
            warp_rows_groups<T, 2>(rr, xs, cols, d, win);
            if (threadIdx.x % 32 == 0) y[r] = silu(d[0]) * d[1];
        } else {
            const uint8_t* rr[1] = {W.row(r)};
            float d[1];
            warp_rows_groups<T, 1>(rr, xs, cols, d, win);
            if (threadIdx.x % 32 == 0) y[r] = OUT == MV_ADD ? y[r] + d[0] : d[0];
        }
    }
}

// matvec_launch for v2: block types only; W's matrices 2-byte aligned (with 15 bytes allocated before and after,
// as for v1), x 16-byte aligned.
template <bool NORM, int OUT>
void matvec_v2_launch(const MatRows& W, const float* x, const float* g, float eps, float* y, const Launch& l) {
    const int rows = OUT == MV_SWIGLU ? W.rows[0] : W.n_rows, cols = W.cols;
    if (rows < 1 || cols < 1) fail("matvec v2: bad shape %d x %d", rows, cols);
    if (!is_quantized(W.type) || cols % dtype_info(W.type).block) fail("matvec v2: a block type, whole blocks per row");
    if (OUT == MV_SWIGLU && (W.rows[1] != rows || W.rows[2] != 0)) fail("matvec v2: swiglu needs gate and up of one shape");
    for (int p = 0; p < 3; p++)
        if (W.rows[p] && reinterpret_cast<uintptr_t>(W.data[p]) % 2) fail("matvec v2: the weights are not 2-byte aligned");
    if (!NORM && reinterpret_cast<uintptr_t>(x) % 16) fail("matvec v2: the input is not 16-byte aligned");
    size_t smem = matvec_smem(W.type, NORM, cols);
    int rpb = matvec_rows_per_block(NORM, rows, l);
    with_dtype(W.type, "matvec v2", [&](auto T) {
        if constexpr (is_quantized(T.value)) {
            allow_smem(matvec_v2_kernel<T.value, NORM, OUT>, smem, l, "matvec v2");
            matvec_v2_kernel<T.value, NORM, OUT>
                <<<ceil_div(rows, rpb), 32 * MV_WARPS, smem, l.stream>>>(W, x, g, eps, y, rpb);
        }
    });
    CUDA_CHECK(cudaGetLastError());
}

// ============================================================================
// The prefill's decoding to bf16, v2
// ============================================================================

// out[r, 8k .. 8k + 8) = bf16(group k of row r), one 16-byte store per thread   grid (rows, ceil(groups / 128)),
// block 128 (groups = cols / 8)
template <DType T>
static __global__ void dequantize_bf16_v2_kernel(const uint8_t* W, uint64_t row_bytes, bf16* out, int cols) {
    constexpr DTypeInfo ti = dtype_info(T);
    constexpr int G = ti.block / 8;
    int k = blockIdx.y * blockDim.x + threadIdx.x;
    if (k >= cols / 8) return;
    float v[8];
    dequant_group<T>(W + blockIdx.x * row_bytes + size_t(k / G) * ti.bytes, k % G, v);
    __align__(16) bf16 o[8];
    for (int i = 0; i < 8; i++) o[i] = f2bf(v[i]);
    reinterpret_cast<uint4*>(out + size_t(blockIdx.x) * cols)[k] = *reinterpret_cast<const uint4*>(o);
}
// W: a device view of a block type (rows, cols), 2-byte aligned; out: (rows, cols) bf16, 16-byte aligned.
inline void dequantize_bf16_v2(const Tensor& W, bf16* out, const Launch& l) {
    if (W.rows < 1 || W.cols < 1) fail("dequantize_bf16 v2: bad shape %d x %d", W.rows, W.cols);
    if (!is_quantized(W.type) || W.cols % dtype_info(W.type).block) fail("dequantize_bf16 v2: a block type, whole blocks per row");
    if (reinterpret_cast<uintptr_t>(W.data) % 2 || reinterpret_cast<uintptr_t>(out) % 16)
        fail("dequantize_bf16 v2: misaligned weights or output");
    with_dtype(W.type, "dequantize_bf16 v2", [&](auto T) {
        if constexpr (is_quantized(T.value))
            dequantize_bf16_v2_kernel<T.value>
                <<<dim3(W.rows, ceil_div(W.cols / 8, 128)), 128, 0, l.stream>>>(W.data, W.row_bytes(), out, W.cols);
    });
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace gpu
}  // namespace qwen
