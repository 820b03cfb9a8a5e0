// qwen.cuh: the CUDA engine for the models of qwen.hpp (weights in their storage type, fp32 accumulation).
//
// provides (namespace qwen):
//   CUDA_CHECK, CUBLAS_CHECK             error checks that call qwen::fail with file:line and the error string
//   gpu::*                               kernels and their launchers, in data-flow order:
//     with_dtype                         a run-time weight type to the kernel instance for it
//     row kernels                        embed (any weight type), rmsnorm (optionally of gathered rows: those
//                                        whose logits a step wants), swiglu (the GEMM path)
//     decode kernels                     matvec: one fused dequantize-matvec per weight type (+ RMSNorm, +
//                                        residual, + SwiGLU fusions; q/k/v in one launch), qkv_epilogue
//                                        (bias, q/k norm, RoPE, per-row positions, write to per-row pool rows),
//                                        split-context GQA attention over a batch of decode rows (DecodeRows),
//                                        each with its own position and block table into the paged KV pool
//     prefill kernels                    dequantize_bf16 + gemm (cuBLAS), tiled causal attention with online
//                                        softmax reading one sequence's K/V through its block table
//     sampling kernels                   logit bias and penalties, the token mask, argmax, softmax, top-k /
//                                        top-p / min-p selection and draw, logprobs
//     device_available, device_unsupported   whether (and why not) the engine can run on this machine
//     test oracles (end of file)         matvec_ref, attention_decode_ref
//   GpuEngine                            qwen::Engine on one GPU: weights upload, the paged KV pool, the batched
//                                        step (all rows of all sequences through the GEMMs; one sequence's decode
//                                        token through the fused kernels as a CUDA graph), logits(i), sample(i)
//   make_engine(model, ctx, ..., kv_blocks)  the GPU engine when a usable device is present, else the CPU
//                                        reference, with a KV pool of kv_blocks blocks
#pragma once
#include "qwen.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cub/cub.cuh>
#include <mma.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <unistd.h>

// ============================================================================
// Error checks: every CUDA / cuBLAS call goes through one of these
// ============================================================================
namespace qwen {
namespace gpu {

inline void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
    if (e != cudaSuccess) fail("%s:%d: %s failed: %s", file, line, call, cudaGetErrorString(e));
}
inline void check_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS) fail("%s:%d: %s failed: %s", file, line, call, cublasGetStatusString(s));
}
#define CUDA_CHECK(call) ::qwen::gpu::check_cuda((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) ::qwen::gpu::check_cublas((call), #call, __FILE__, __LINE__)

// ============================================================================
// Device helpers: bf16 unpacking, warp and block reductions
// ============================================================================

// What every launcher needs to know: the stream to run on and the size of the device.
struct Launch {
    cudaStream_t stream = nullptr;
    int sm_count = 1;              // multiprocessors, to size grids
    size_t smem_optin = 48 << 10;  // the most dynamic shared memory one block may ask for
};

inline Launch make_launch(cudaStream_t stream) {
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    Launch l;
    l.stream = stream;
    l.sm_count = prop.multiProcessorCount;
    l.smem_optin = prop.sharedMemPerBlockOptin;
    return l;
}

__device__ __forceinline__ float bf2f(bf16 h) { return __uint_as_float(uint32_t(h) << 16); }

// Round to nearest even, NaN kept (the same rule as qwen::f32_to_bf16 on the host).
__device__ __forceinline__ bf16 f2bf(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return bf16(u >> 16);
}

// A 32-bit word holds two bf16: element 0 in the low half (little-endian), element 1 in the high half.
__device__ __forceinline__ float lo_bf(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi_bf(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// sum_i w[i] * x[i] over 8 weights of a 16-bit type T (bf16 or f16; one 16-byte load) and 8 fp32 inputs.
template <DType T>
__device__ __forceinline__ float dot8(uint4 w, float4 a, float4 b) {
    auto lo = [](uint32_t v) { return T == DT_BF16 ? lo_bf(v) : f16_to_f32(uint16_t(v)); };
    auto hi = [](uint32_t v) { return T == DT_BF16 ? hi_bf(v) : f16_to_f32(uint16_t(v >> 16)); };
    float s = lo(w.x) * a.x;
    s = fmaf(hi(w.x), a.y, s);
    s = fmaf(lo(w.y), a.z, s);
    s = fmaf(hi(w.y), a.w, s);
    s = fmaf(lo(w.z), b.x, s);
    s = fmaf(hi(w.z), b.y, s);
    s = fmaf(lo(w.w), b.z, s);
    s = fmaf(hi(w.w), b.w, s);
    return s;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum (or max) over the whole block, returned to every thread. blockDim.x must be a multiple of 32.
template <bool MAX>
__device__ float block_reduce(float v) {
    __shared__ float part[32];
    __shared__ float total;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
    v = MAX ? warp_max(v) : warp_sum(v);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float x = lane < n_warps ? part[lane] : (MAX ? -INFINITY : 0.0f);
        x = MAX ? warp_max(x) : warp_sum(x);
        if (lane == 0) total = x;
    }
    __syncthreads();
    float r = total;
    __syncthreads();  // `total` and `part` may be reused by the next call
    return r;
}
__device__ inline float block_sum(float v) { return block_reduce<false>(v); }
__device__ inline float block_max(float v) { return block_reduce<true>(v); }

__host__ __device__ inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Lets `kernel` use `bytes` of dynamic shared memory (beyond 48 KB needs an explicit opt-in).
template <typename K>
void allow_smem(K* kernel, size_t bytes, const Launch& l, const char* what) {
    if (bytes > l.smem_optin)
        fail("%s needs %zu bytes of shared memory per block, the device allows %zu", what, bytes, l.smem_optin);
    if (bytes > (48u << 10))
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// ============================================================================
// Row kernels: embedding, RMSNorm, SwiGLU over (n tokens, width) activations (prefill; decode fuses them)
// ============================================================================

// Runs f(std::integral_constant<DType, t>()) for a readable storage type t: a kernel template's instance
// for that type. The one place where a run-time type becomes a compile-time one.
template <class F>
void with_dtype(DType t, const char* what, F&& f) {
    switch (t) {
        case DT_F32: return f(std::integral_constant<DType, DT_F32>());
        case DT_F16: return f(std::integral_constant<DType, DT_F16>());
        case DT_BF16: return f(std::integral_constant<DType, DT_BF16>());
        case DT_Q8_0: return f(std::integral_constant<DType, DT_Q8_0>());
        case DT_Q4_0: return f(std::integral_constant<DType, DT_Q4_0>());
        case DT_Q5_0: return f(std::integral_constant<DType, DT_Q5_0>());
        case DT_Q5_1: return f(std::integral_constant<DType, DT_Q5_1>());
        case DT_Q4_K: return f(std::integral_constant<DType, DT_Q4_K>());
        case DT_Q5_K: return f(std::integral_constant<DType, DT_Q5_K>());
        case DT_Q6_K: return f(std::integral_constant<DType, DT_Q6_K>());
        default: fail("%s: weights of type %s are not supported", what, dtype_name(t).c_str());
    }
}

// Element c of a row of an unquantized type (F32, F16, BF16).
template <DType T>
__device__ __forceinline__ float load_elem(const uint8_t* row, int c) {
    if constexpr (T == DT_F32) return reinterpret_cast<const float*>(row)[c];
    else if constexpr (T == DT_F16) return f16_to_f32(reinterpret_cast<const uint16_t*>(row)[c]);
    else return bf2f(reinterpret_cast<const bf16*>(row)[c]);
}

// Calls f(i, x_i) for the values of row `row` (of type T) that thread `tid` of `n_threads` decodes: single values
// of an unquantized type, whole chunks (dtype_info(T).chunk values sharing their scales) of a quantized one.
template <DType T, class F>
__device__ __forceinline__ void for_row_values(const uint8_t* row, int cols, int tid, int n_threads, F&& f) {
    constexpr DTypeInfo ti = dtype_info(T);
    if constexpr (ti.block == 1) {
        for (int c = tid; c < cols; c += n_threads) f(c, load_elem<T>(row, c));
    } else {
        constexpr int per_block = ti.block / ti.chunk;
        for (int k = tid; k < cols / ti.chunk; k += n_threads) {
            int base = k * ti.chunk;
            dequant_chunk(T, row + size_t(k / per_block) * ti.bytes, k % per_block,
                          [&](int i, float v) { f(base + i, v); });
        }
    }
}

// x[t, c] = E[tokens[t], c], E in storage type T   grid (n), block 256
template <DType T>
static __global__ void embed_kernel(const uint8_t* E, uint64_t row_bytes, const int* tokens, float* x, int dim) {
    const uint8_t* row = E + uint64_t(tokens[blockIdx.x]) * row_bytes;
    float* out = x + size_t(blockIdx.x) * dim;
    for_row_values<T>(row, dim, threadIdx.x, blockDim.x, [&](int c, float v) { out[c] = v; });
}
// E: (vocab, dim) device view; x: (n, dim) fp32; tokens: (n) device ids, already range-checked by the caller.
inline void embed(const Tensor& E, const int* tokens, float* x, int n, const Launch& l) {
    if (n < 1 || E.cols < 1) fail("embed: bad shape %d x %d", n, E.cols);
    with_dtype(E.type, "embed", [&](auto T) {
        embed_kernel<T.value><<<n, 256, 0, l.stream>>>(E.data, E.row_bytes(), tokens, x, E.cols);
    });
    CUDA_CHECK(cudaGetLastError());
}

// out[t, c] = x[s, c] / sqrt(mean_c x[s, c]^2 + eps) * g[c], s = rows ? rows[t] : t   grid (n), block 256
template <typename Out>
static __global__ void rmsnorm_kernel(const float* x, const float* g, Out* out, int dim, float eps, const int* rows) {
    const float* xr = x + size_t(rows ? rows[blockIdx.x] : blockIdx.x) * dim;
    float ss = 0;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) ss += xr[c] * xr[c];
    float scale = rsqrtf(block_sum(ss) / dim + eps);
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        float v = xr[c] * scale * g[c];
        if constexpr (std::is_same<Out, float>::value) out[size_t(blockIdx.x) * dim + c] = v;
        else out[size_t(blockIdx.x) * dim + c] = f2bf(v);
    }
}
// x: (n, dim) fp32, g: (dim) fp32, out: (n, dim) fp32 or bf16 (the bf16 form feeds cuBLAS). rows: null, or (n)
// device ints: out's row t normalises x's row rows[t] (a gather, for the rows whose logits are wanted).
template <typename Out>
void rmsnorm(const float* x, const float* g, Out* out, int n, int dim, float eps, const Launch& l,
             const int* rows = nullptr) {
    if (n < 1 || dim < 1) fail("rmsnorm: bad shape %d x %d", n, dim);
    rmsnorm_kernel<Out><<<n, 256, 0, l.stream>>>(x, g, out, dim, eps, rows);
    CUDA_CHECK(cudaGetLastError());
}

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

// out[t, i] = silu(gu[t, i]) * gu[t, ffn + i]   grid (n, ceil(ffn / 256)), block 256
template <typename Out>
static __global__ void swiglu_kernel(const float* gu, Out* out, int ffn) {
    int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= ffn) return;
    const float* row = gu + size_t(blockIdx.x) * 2 * ffn;
    float v = silu(row[i]) * row[ffn + i];
    if constexpr (std::is_same<Out, float>::value) out[size_t(blockIdx.x) * ffn + i] = v;
    else out[size_t(blockIdx.x) * ffn + i] = f2bf(v);
}
// gu: (n, 2*ffn) fp32 (gate columns, then up columns), out: (n, ffn) fp32 or bf16.
template <typename Out>
void swiglu(const float* gu, Out* out, int n, int ffn, const Launch& l) {
    if (n < 1 || ffn < 1) fail("swiglu: bad shape %d x %d", n, ffn);
    swiglu_kernel<Out><<<dim3(n, ceil_div(ffn, 256)), 256, 0, l.stream>>>(gu, out, ffn);
    CUDA_CHECK(cudaGetLastError());
}

// ============================================================================
// Decode kernels: one token per step, so every weight byte is read once and the step is bound by memory
// bandwidth. Fusions keep activations out of device memory between ops.
// ============================================================================

constexpr int MV_WARPS = 8;   // warps per matvec block; each warp owns whole rows
constexpr int MV_UNROLL = 4;  // independent 16-byte weight loads in flight per lane before the first use

enum MatvecOut { MV_STORE, MV_ADD, MV_SWIGLU };

// Stages the RMS-normalised matvec input in shared memory: xs[c] = x[c] * rsqrt(mean(x^2) + eps) * g[c].
// Every block computes the (cheap, L2-resident) scale itself; 16-byte loads where cols and the pointers allow.
__device__ inline void stage_norm_input(const float* x, const float* g, float eps, int cols, float* xs) {
    float ss = 0;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) ss += x[c] * x[c];
    float scale = rsqrtf(block_sum(ss) / cols + eps);
    if (cols % 4 == 0 && (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(g)) % 16 == 0) {
        const float4 *x4 = reinterpret_cast<const float4*>(x), *g4 = reinterpret_cast<const float4*>(g);
        for (int c = threadIdx.x; c < cols / 4; c += blockDim.x) {
            float4 v = x4[c], w = g4[c];
            reinterpret_cast<float4*>(xs)[c] =
                make_float4(v.x * scale * w.x, v.y * scale * w.y, v.z * scale * w.z, v.w * scale * w.w);
        }
    } else {
        for (int c = threadIdx.x; c < cols; c += blockDim.x) xs[c] = x[c] * scale * g[c];
    }
    __syncthreads();
}

// NR dot products of bf16 or f16 rows with the input xs (shared or global memory), by one warp. Each lane
// streams 16-byte chunks (8 values) of every row, MV_UNROLL chunks per row loaded before any is used, so enough
// bytes are in flight to cover memory latency. Weights are read once per token: load them with the evict-first hint.
template <DType T, int NR>
__device__ void warp_rows_dot16(const uint8_t* const (&rows)[NR], const float* xs, int cols, float (&out)[NR]) {
    int lane = threadIdx.x % 32, n8 = cols / 8;
    const float4* x4 = reinterpret_cast<const float4*>(xs);
    float acc[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) acc[r] = 0;
    for (int base = lane; base < n8; base += 32 * MV_UNROLL) {
        uint4 w[NR][MV_UNROLL];
#pragma unroll
        for (int u = 0; u < MV_UNROLL; u++)
#pragma unroll
            for (int r = 0; r < NR; r++) {
                int i = base + u * 32;
                w[r][u] = i < n8 ? __ldcs(reinterpret_cast<const uint4*>(rows[r]) + i) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
        for (int u = 0; u < MV_UNROLL; u++) {
            int i = base + u * 32;
            if (i < n8) {
                float4 a = x4[2 * i], b = x4[2 * i + 1];
#pragma unroll
                for (int r = 0; r < NR; r++) acc[r] += dot8<T>(w[r][u], a, b);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < NR; r++) out[r] = warp_sum(acc[r]);
}

// The same dot products value by value (lane i takes values i, i + 32, ...): for rows of F32, and rows of
// 16-bit values whose length is not a multiple of 8 (such rows do not start on 16-byte boundaries; no real Qwen
// shape needs this, odd test shapes do).
template <DType T, int NR>
__device__ void warp_rows_values(const uint8_t* const (&rows)[NR], const float* xs, int cols, float (&out)[NR]) {
#pragma unroll
    for (int r = 0; r < NR; r++) {
        float a = 0;
        for_row_values<T>(rows[r], cols, threadIdx.x % 32, 32, [&](int c, float v) { a = fmaf(v, xs[c], a); });
        out[r] = warp_sum(a);
    }
}

constexpr int MV_WINDOW = 256;  // 16-byte words of a row one warp stages at a time (4 KB) for the block types

// The fused dequantize-matvec of the block types (Q8_0 .. Q6_K). Blocks are 18 to 210 bytes, so rows rarely
// start on 16-byte boundaries: the warp copies a window of the row, from its 16-byte boundary at or before the
// next block, into its own shared memory with 16-byte loads (each lane a word, coalesced), then its lanes take the
// whole blocks in the window chunk by chunk (dtype_info(T).chunk values that share their scale bytes: 32 for
// Q8_0 / Q4_0 / Q5_x, 64 for Q4_K / Q5_K, 128 for Q6_K), decode each chunk's scales once and feed every value
// straight into the dot product. A block cut by the window's end is staged again with the next window. So each
// weight byte comes from memory once, and no decoded value is stored anywhere. The window may reach up to 15
// bytes before the row's first block and after its last: the matrix's allocation must allow that (the engine's
// upload pads every span; see upload_weights). win: this warp's MV_WINDOW words of shared memory.
template <DType T, int NR>
__device__ void warp_rows_blocks(const uint8_t* const (&rows)[NR], const float* xs, int cols, float (&out)[NR],
                                 uint4* win) {
    constexpr DTypeInfo ti = dtype_info(T);
    constexpr int per_block = ti.block / ti.chunk;
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
            __syncwarp();  // the previous window is no longer read
            for (int i = lane; i < words; i += 32) win[i] = __ldcs(base + i);
            __syncwarp();
            const uint8_t* w = reinterpret_cast<const uint8_t*>(win) + skew;
            for (int k = lane; k < nb * per_block; k += 32) {
                const int b = k / per_block, c = k % per_block;
                const float* xk = xs + size_t(b0 + b) * ti.block + c * ti.chunk;
                dequant_chunk(T, w + b * ti.bytes, c, [&](int i, float v) { a = fmaf(v, xk[i], a); });
            }
            b0 += nb;
        }
        out[r] = warp_sum(a);
    }
}

// NR dot products of whole rows with the input, with 16-byte loads where the type and the rows allow.
template <DType T, int NR>
__device__ void warp_rows(const uint8_t* const (&rows)[NR], const float* xs, int cols, float (&out)[NR], uint4* win) {
    if constexpr (is_quantized(T)) return warp_rows_blocks<T, NR>(rows, xs, cols, out, win);
    if constexpr (T == DT_BF16 || T == DT_F16) {
        if (cols % 8 == 0) return warp_rows_dot16<T, NR>(rows, xs, cols, out);
    }
    warp_rows_values<T, NR>(rows, xs, cols, out);
}

// The matrices of one matvec: up to three of one storage type whose rows are read as one (a layer's q, k and v
// make one launch), or for MV_SWIGLU the gate matrix (part 0) and the up matrix (part 1).
struct MatRows {
    const uint8_t* data[3] = {nullptr, nullptr, nullptr};  // device views
    int rows[3] = {0, 0, 0};
    int n_rows = 0, cols = 0;  // rows of the parts together; their common row length
    DType type = DT_BF16;
    uint64_t row_bytes = 0;
    // Row r of the parts' rows one after another.
    __host__ __device__ const uint8_t* row(int r) const {
        int p = r < rows[0] ? 0 : r < rows[0] + rows[1] ? 1 : 2;
        int first = p == 0 ? 0 : p == 1 ? rows[0] : rows[0] + rows[1];
        return data[p] + uint64_t(r - first) * row_bytes;
    }
};

// Up to three device views of one type and row length as one MatRows.
inline MatRows mat_rows(std::initializer_list<const Tensor*> parts) {
    MatRows m;
    int k = 0;
    for (const Tensor* t : parts) {
        if (k == 3) fail("matvec: at most three matrices per launch");
        if (k > 0 && (t->type != m.type || t->cols != m.cols)) fail("matvec: matrices of one launch differ in type or row length");
        m.data[k] = t->data;
        m.rows[k++] = t->rows;
        m.n_rows += t->rows;
        m.cols = t->cols;
        m.type = t->type;
        m.row_bytes = t->row_bytes();
    }
    return m;
}

// The decode matvec, y = W xs with W's rows in storage type T; OUT picks the epilogue:
//   MV_STORE  y[r] = W[r] . xs                     (q/k/v projection, lm_head)
//   MV_ADD    y[r] += W[r] . xs                    (wo and w_down: the residual add)
//   MV_SWIGLU y[r] = silu(Wgate[r] . xs) * (Wup[r] . xs)   (W's parts 0 and 1)
// With NORM, xs = rmsnorm(x, g) staged in shared memory by stage_norm_input; without, xs = x read straight from
// global memory (it stays in L1/L2): no staged copy, so occupancy is not limited by long inputs (w_down's 18,944
// floats would be 74 KB per block) and no block waits for a staging loop before its first weight load.
// grid (ceil(rows / rows_per_block)), block 32 * MV_WARPS, smem matvec_smem(T, NORM, cols) bytes
template <DType T, bool NORM, int OUT>
static __global__ void __launch_bounds__(32 * MV_WARPS)
    matvec_kernel(MatRows W, const float* __restrict__ x, const float* __restrict__ g, float eps,
                  float* __restrict__ y, int rows_per_block) {
    extern __shared__ float4 smem4[];
    const int rows = OUT == MV_SWIGLU ? W.rows[0] : W.n_rows, cols = W.cols;
    const float* xs = x;
    if (NORM) {
        stage_norm_input(x, g, eps, cols, reinterpret_cast<float*>(smem4));
        xs = reinterpret_cast<const float*>(smem4);  // (cols) the normalised input
    }
    int warp = threadIdx.x / 32, r_end = min(rows, (blockIdx.x + 1) * rows_per_block);
    uint4* win = reinterpret_cast<uint4*>(smem4 + (NORM ? ceil_div(cols, 4) : 0)) + warp * MV_WINDOW;  // block types
    for (int r = blockIdx.x * rows_per_block + warp; r < r_end; r += MV_WARPS) {
        if (OUT == MV_SWIGLU) {
            const uint8_t* rr[2] = {W.data[0] + uint64_t(r) * W.row_bytes, W.data[1] + uint64_t(r) * W.row_bytes};
            float d[2];
            warp_rows<T, 2>(rr, xs, cols, d, win);
            if (threadIdx.x % 32 == 0) y[r] = silu(d[0]) * d[1];
        } else {
            const uint8_t* rr[1] = {W.row(r)};
            float d[1];
            warp_rows<T, 1>(rr, xs, cols, d, win);
            if (threadIdx.x % 32 == 0) y[r] = OUT == MV_ADD ? y[r] + d[0] : d[0];
        }
    }
}

// Rows per block. Without staging, one row per warp: the most blocks, every SM streaming. With a staged input,
// whole warps and enough blocks for ~4 waves over the device, at most 8 rows per warp (more rows per block
// amortise the staging).
inline int matvec_rows_per_block(bool staged, int rows, const Launch& l) {
    if (!staged) return MV_WARPS;
    int per_block = ceil_div(rows, 4 * l.sm_count);
    per_block = ceil_div(per_block, MV_WARPS) * MV_WARPS;
    return std::min(std::max(per_block, MV_WARPS), 8 * MV_WARPS);
}

// Shared memory of a matvec block: the staged input with NORM, and for the block types a window per warp.
inline size_t matvec_smem(DType t, bool norm, int cols) {
    return (norm ? size_t(ceil_div(cols, 4)) * 16 : 0) + (is_quantized(t) ? size_t(MV_WARPS) * MV_WINDOW * 16 : 0);
}

// W: device views (for MV_SWIGLU: gate and up, (rows, cols) each); x: (cols) fp32; g: (cols) fp32 when NORM;
// y: (rows) fp32, not aliasing x. 16-byte loads of bf16 / f16 rows need 16-byte aligned matrices; block types
// need 15 bytes of allocated memory before and after each matrix (see warp_rows_blocks).
template <bool NORM, int OUT>
void matvec_launch(const MatRows& W, const float* x, const float* g, float eps, float* y, const Launch& l) {
    const int rows = OUT == MV_SWIGLU ? W.rows[0] : W.n_rows, cols = W.cols;
    if (rows < 1 || cols < 1) fail("matvec: bad shape %d x %d", rows, cols);
    if (OUT == MV_SWIGLU && (W.rows[1] != rows || W.rows[2] != 0)) fail("matvec: swiglu needs gate and up of one shape");
    bool wide = (W.type == DT_BF16 || W.type == DT_F16) && cols % 8 == 0;  // 16-byte loads of W (and of x)
    for (int p = 0; p < 3; p++)
        if (W.rows[p] && wide && reinterpret_cast<uintptr_t>(W.data[p]) % 16 != 0)
            fail("matvec: the weights are not 16-byte aligned");
    if (wide && !NORM && reinterpret_cast<uintptr_t>(x) % 16 != 0) fail("matvec: the input is not 16-byte aligned");
    size_t smem = matvec_smem(W.type, NORM, cols);
    int rpb = matvec_rows_per_block(NORM, rows, l);
    with_dtype(W.type, "matvec", [&](auto T) {
        allow_smem(matvec_kernel<T.value, NORM, OUT>, smem, l, "matvec");
        matvec_kernel<T.value, NORM, OUT><<<ceil_div(rows, rpb), 32 * MV_WARPS, smem, l.stream>>>(W, x, g, eps, y, rpb);
    });
    CUDA_CHECK(cudaGetLastError());
}

// y = W x
inline void matvec(const Tensor& W, const float* x, float* y, const Launch& l) {
    matvec_launch<false, MV_STORE>(mat_rows({&W}), x, nullptr, 0.0f, y, l);
}
// y += W x   (residual add in the epilogue)
inline void matvec_residual(const Tensor& W, const float* x, float* y, const Launch& l) {
    matvec_launch<false, MV_ADD>(mat_rows({&W}), x, nullptr, 0.0f, y, l);
}
// y = [W_0; W_1; ...] rmsnorm(x, g): the matrices' rows one after another (q, k, v), all of one type.
inline void rmsnorm_matvec(const MatRows& W, const float* x, const float* g, float eps, float* y, const Launch& l) {
    matvec_launch<true, MV_STORE>(W, x, g, eps, y, l);
}
// y = silu(Wgate rmsnorm(x, g)) * (Wup rmsnorm(x, g)); gate, up: (ffn, cols) of one type; y: (ffn)
inline void rmsnorm_matvec_swiglu(const Tensor& gate, const Tensor& up, const float* x, const float* g, float eps,
                                  float* y, const Launch& l) {
    matvec_launch<true, MV_SWIGLU>(mat_rows({&gate, &up}), x, g, eps, y, l);
}

// A device bf16 (rows, cols) matrix as a view (tests, dev/).
inline Tensor bf16_matrix(const bf16* W, int rows, int cols) {
    return Tensor{reinterpret_cast<const uint8_t*>(W), DT_BF16, rows, cols};
}

// What qkv_epilogue needs to know about the layer (device pointers; biases and norms may be null).
struct QkvLayer {
    const float* bias[3] = {nullptr, nullptr, nullptr};  // (q_dim), (kv_dim), (kv_dim): q, k, v biases
    const float* q_norm = nullptr;                          // (head_dim) Qwen3
    const float* k_norm = nullptr;                          // (head_dim) Qwen3
    bf16* k_cache = nullptr;       // (pool rows, kv_dim) this layer's keys
    bf16* v_cache = nullptr;       // (pool rows, kv_dim) this layer's values
};

// The KV pool row of position t of a sequence whose block table is `table`: kv_pool_row of qwen.hpp, on the device.
__device__ __forceinline__ int kv_row(const int* table, int t) {
    return table[t / KV_BLOCK] * KV_BLOCK + t % KV_BLOCK;
}

// For row t at position p = pos[t], one block per head (q heads, then k heads, then v heads):
//   h = qkv[t, head] + bias;  q, k: h = rmsnorm(h, q/k_norm) (Qwen3);  q, k: RoPE(h, p)
//   q is written back in place (fp32); k and v go to the pool row slot[t] as bf16.
// RoPE rotates pairs (i, i + D/2) by p * inv_freq[i] (the "rotate_half" layout of HF Qwen).
// grid (n_heads + 2*n_kv_heads, n_tokens), block 128; D even, D <= 256
static __global__ void qkv_epilogue_kernel(float* qkv, QkvLayer L, const float* inv_freq, const int* pos,
                                           const int* slot, int n_heads, int n_kv_heads, int D, float eps) {
    int head = blockIdx.x, t = blockIdx.y, p = pos[t], half = D / 2;
    int q_dim = n_heads * D, kv_dim = n_kv_heads * D;
    // kind 0, 1, 2: a q, k or v head; off: its first column in the q | k | v row
    int kind = head < n_heads ? 0 : head < n_heads + n_kv_heads ? 1 : 2;
    int off = head * D;
    float* h = qkv + size_t(t) * (q_dim + 2 * kv_dim) + off;
    // each thread owns the pair (i, i + half)
    int i = threadIdx.x;
    bool mine = i < half;
    float a = mine ? h[i] : 0, b = mine ? h[i + half] : 0;
    const float* bias = L.bias[kind];
    int col = off - (kind == 0 ? 0 : kind == 1 ? q_dim : q_dim + kv_dim);  // its first column in q, k or v
    if (bias && mine) {
        a += bias[col + i];
        b += bias[col + i + half];
    }
    const float* norm = kind == 0 ? L.q_norm : kind == 1 ? L.k_norm : nullptr;
    if (norm) {  // block-uniform branch: block_sum inside is safe
        float scale = rsqrtf(block_sum(a * a + b * b) / D + eps);
        if (mine) {
            a = a * scale * norm[i];
            b = b * scale * norm[i + half];
        }
    }
    if (!mine) return;
    if (kind != 2) {
        float s, c;
        sincosf(float(p) * inv_freq[i], &s, &c);
        float a2 = a * c - b * s, b2 = b * c + a * s;
        a = a2;
        b = b2;
    }
    if (kind == 0) {
        h[i] = a;
        h[i + half] = b;
    } else {
        bf16* row = (kind == 1 ? L.k_cache : L.v_cache) + size_t(slot[t]) * kv_dim;
        row[col + i] = f2bf(a);
        row[col + i + half] = f2bf(b);
    }
}
// qkv: (n, q_dim + 2*kv_dim) fp32; inv_freq: (D/2) fp32; pos: (n) device ints, each row's position; slot: (n)
// device ints, each row's pool row (the rows of one step are distinct).
inline void qkv_epilogue(float* qkv, const QkvLayer& L, const float* inv_freq, const int* pos, const int* slot, int n,
                         int n_heads, int n_kv_heads, int D, float eps, const Launch& l) {
    if (D % 2 != 0 || D > 256) fail("qkv_epilogue: head_dim %d must be even and <= 256", D);
    if (n < 1) fail("qkv_epilogue: n must be >= 1, got %d", n);
    qkv_epilogue_kernel<<<dim3(n_heads + 2 * n_kv_heads, n), 128, 0, l.stream>>>(qkv, L, inv_freq, pos, slot, n_heads,
                                                                                 n_kv_heads, D, eps);
    CUDA_CHECK(cudaGetLastError());
}

constexpr int ATT_THREADS = 128;  // attention blocks: one token per thread when scoring
constexpr int ATT_MAX_D = 256;

constexpr int ATT_MAX_GROUP = 8;  // query heads one attention block serves (registers per thread grow with it)

// Tokens per context chunk: T spread over n_parts chunks, but at least one full tile of ATT_THREADS tokens, so that
// a short context is scored by a few full blocks (the rest exit at once) and combined from few partial results.
__device__ __forceinline__ int attention_chunk(int T, int n_parts) { return max(ceil_div(T, n_parts), ATT_THREADS); }

// Flash-decoding, part 1, for a batch of decode rows (grid z: row b, its own sequence). Row b's query is
// q[b * q_stride ..], its T = pos[b] + 1 cached tokens are read through its block table tables + table_off[b]
// (token t in pool row kv_row(table, t)). The T tokens are cut into chunks of attention_chunk(T, n_parts)
// tokens; the blocks of parts past the last token exit at once. The query heads that share a kv head (GQA:
// G = n_heads / n_kv_heads of them) are served by one block, or by ceil(G / 8) blocks of up to 8 heads each, so
// each cached K/V row is read once per block rather than once per head. Per tile of ATT_THREADS tokens, each
// thread scores one token against the block's heads (16-byte K loads), one warp per head updates that head's
// online softmax, then the threads accumulate the outputs over the tile's V rows:
//   m = max_t s_t,  l = sum_t exp(s_t - m),  o[d] = sum_t exp(s_t - m) V[t, d],   s_t = q . K[t] / sqrt(D)
// and write these unnormalised partial results per (head, part) for attention_reduce_kernel. The chunk length
// comes from device memory, so the launch shape is the same at every position (a CUDA graph can replay it).
// Partial results of row b, head h, part p: slot (b * n_heads + h) * n_parts + p.
// grid (n_kv_heads * ceil(G / ATT_MAX_GROUP), n_parts, n_rows), block ATT_THREADS,
// smem min(G, ATT_MAX_GROUP) * D floats
static __global__ void __launch_bounds__(ATT_THREADS)
    attention_decode_kernel(const float* q, int q_stride, const bf16* K, const bf16* V, const int* pos,
                            const int* tables, const int* table_off, float* part_o, float* part_ml, int n_heads,
                            int n_kv_heads, int D) {
    constexpr int WARPS = ATT_THREADS / 32, PER_WARP = ATT_MAX_GROUP / WARPS;  // heads whose softmax a warp keeps
    extern __shared__ float4 smem4[];
    float* qs = reinterpret_cast<float*>(smem4);          // (Gb, D) the block's queries, pre-scaled by 1/sqrt(D)
    __shared__ float p_tile[ATT_MAX_GROUP][ATT_THREADS];  // per head: the tile's scores, then exp(s - m)
    __shared__ float corr[ATT_MAX_GROUP];                 // per head: exp(m_old - m_new) for this tile
    __shared__ int rows[ATT_THREADS];                     // the pool rows of the tile's tokens
    int part = blockIdx.y, n_parts = gridDim.y, b = blockIdx.z, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int* table = tables + table_off[b];
    q += size_t(b) * q_stride;
    part_o += size_t(b) * n_heads * n_parts * D;
    part_ml += size_t(b) * n_heads * n_parts * 2;
    int T = pos[b] + 1, chunk = attention_chunk(T, n_parts);
    int t_begin = part * chunk, t_end = min(T, t_begin + chunk);
    if (t_begin >= T) return;  // past the context: attention_reduce_kernel reads only the live parts
    int G = n_heads / n_kv_heads, n_sub = ceil_div(G, ATT_MAX_GROUP), kv_dim = n_kv_heads * D;
    int kvh = blockIdx.x / n_sub, h0 = kvh * G + (blockIdx.x % n_sub) * ATT_MAX_GROUP;  // kv head, first q head
    int Gb = min(ATT_MAX_GROUP, (kvh + 1) * G - h0);                                    // q heads of this block
    for (int e = tid; e < Gb * D; e += ATT_THREADS) qs[e] = q[size_t(h0) * D + e] * rsqrtf(float(D));
    __syncthreads();
    float m[PER_WARP], lsum[PER_WARP], acc[ATT_MAX_GROUP * ATT_MAX_D / ATT_THREADS] = {};  // head warp + WARPS * i
#pragma unroll
    for (int i = 0; i < PER_WARP; i++) m[i] = -INFINITY, lsum[i] = 0;
    for (int t0 = t_begin; t0 < t_end; t0 += ATT_THREADS) {
        int t = t0 + tid;
        float s[ATT_MAX_GROUP] = {};
        if (t < t_end) {
            int r = rows[tid] = kv_row(table, t);
            const uint4* k4 = reinterpret_cast<const uint4*>(K + size_t(r) * kv_dim + size_t(kvh) * D);
            for (int j = 0; j < D / 8; j++) {
                uint4 k = k4[j];
#pragma unroll
                for (int g = 0; g < ATT_MAX_GROUP; g++) {
                    if (g >= Gb) break;
                    const float4* q4 = reinterpret_cast<const float4*>(qs + g * D);
                    s[g] += dot8<DT_BF16>(k, q4[2 * j], q4[2 * j + 1]);
                }
            }
        }
#pragma unroll
        for (int g = 0; g < ATT_MAX_GROUP; g++)
            if (g < Gb) p_tile[g][tid] = t < t_end ? s[g] : -INFINITY;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < PER_WARP; i++) {  // warp-wide online softmax of head g over the tile's scores
            int g = warp + WARPS * i;
            if (g >= Gb) break;
            float sv[WARPS], mx = -INFINITY, sum = 0;
#pragma unroll
            for (int j = 0; j < WARPS; j++) mx = fmaxf(mx, sv[j] = p_tile[g][lane + 32 * j]);
            float m_new = fmaxf(m[i], warp_max(mx));  // finite: the tile holds at least one token
#pragma unroll
            for (int j = 0; j < WARPS; j++) {
                float e = sv[j] == -INFINITY ? 0.0f : expf(sv[j] - m_new);
                p_tile[g][lane + 32 * j] = e;
                sum += e;
            }
            float c = expf(m[i] - m_new);  // rescales the sums so far (0 on the first tile)
            lsum[i] = lsum[i] * c + warp_sum(sum);
            m[i] = m_new;
            if (lane == 0) corr[g] = c;
        }
        __syncthreads();
        int n_t = min(ATT_THREADS, t_end - t0);
        // outputs (g, d) are spread over the threads: output o = tid + k * ATT_THREADS
#pragma unroll
        for (int k = 0; k < ATT_MAX_GROUP * ATT_MAX_D / ATT_THREADS; k++) {
            int o = tid + k * ATT_THREADS, g = o / D, d = o % D;
            if (g >= Gb) break;
            float a = acc[k] * corr[g];
#pragma unroll 8
            for (int j = 0; j < n_t; j++)
                a += p_tile[g][j] * bf2f(V[size_t(rows[j]) * kv_dim + size_t(kvh) * D + d]);
            acc[k] = a;
        }
        __syncthreads();  // p_tile, corr and rows are rewritten by the next tile
    }
#pragma unroll
    for (int k = 0; k < ATT_MAX_GROUP * ATT_MAX_D / ATT_THREADS; k++) {
        int o = tid + k * ATT_THREADS, g = o / D, d = o % D;
        if (g >= Gb) break;
        part_o[(size_t(h0 + g) * n_parts + part) * D + d] = acc[k];
    }
#pragma unroll
    for (int i = 0; i < PER_WARP; i++) {
        int g = warp + WARPS * i;
        if (g < Gb && lane == 0) {
            size_t slot = size_t(h0 + g) * n_parts + part;
            part_ml[2 * slot] = m[i];
            part_ml[2 * slot + 1] = lsum[i];
        }
    }
}

// Flash-decoding, part 2: combine row b's partial softmaxes of the live parts (those holding tokens) with their
// log-sum-exp weights,   M = max_p m_p,  out[b, h, d] = sum_p exp(m_p - M) o_p[d] / sum_p exp(m_p - M) l_p
// grid (n_heads, n_rows), block 256 (one thread per output dimension)
template <typename Out>
static __global__ void attention_reduce_kernel(const float* part_o, const float* part_ml, const int* pos, Out* out,
                                               int out_stride, int n_parts, int D) {
    int h = blockIdx.x + blockIdx.y * gridDim.x, d = threadIdx.x;  // h: the (row, head) pair's index
    int T = pos[blockIdx.y] + 1, live = ceil_div(T, attention_chunk(T, n_parts));
    const float* ml = part_ml + size_t(h) * n_parts * 2;
    float M = -INFINITY;
    for (int p = 0; p < live; p++) M = fmaxf(M, ml[2 * p]);
    if (d >= D) return;
    float num = 0, den = 0;
    for (int p = 0; p < live; p++) {
        float w = expf(ml[2 * p] - M);
        num += w * part_o[(size_t(h) * n_parts + p) * D + d];
        den += w * ml[2 * p + 1];
    }
    float o = num / den;
    Out* dst = out + size_t(blockIdx.y) * out_stride + size_t(blockIdx.x) * D + d;
    if constexpr (std::is_same_v<Out, float>) *dst = o;
    else *dst = f2bf(o);
}

// Blocks per context chunk: one per kv head, or more when the GQA group exceeds ATT_MAX_GROUP query heads.
inline int attention_blocks_per_part(int n_heads, int n_kv_heads) {
    return n_kv_heads * ceil_div(n_heads / n_kv_heads, ATT_MAX_GROUP);
}

// Chunks of the context: enough blocks to cover the device about twice, at most one chunk per cached token.
inline int attention_parts(int n_heads, int n_kv_heads, int context, const Launch& l) {
    return std::max(1, std::min(ceil_div(2 * l.sm_count, attention_blocks_per_part(n_heads, n_kv_heads)), context));
}

// Where a batch of decode rows reads: row b's query at q + b * q_stride ((n_heads, D) fp32, rotated), its
// position pos[b] (device), its block table tables + table_off[b] (device ints) into one layer's K, V pool
// ((pool rows, kv_dim) bf16). The single-sequence decode passes one row and an identity table.
struct DecodeRows {
    const float* q = nullptr;
    int q_stride = 0;
    const bf16 *K = nullptr, *V = nullptr;
    const int* pos = nullptr;        // (n_rows)
    const int* tables = nullptr;     // the block tables
    const int* table_off = nullptr;  // (n_rows) where row b's table starts in `tables`
    int n_rows = 1;
};

// part_o: (n_rows, n_heads, n_parts, D) fp32, part_ml: (n_rows, n_heads, n_parts, 2) fp32 scratch;
// out: row b's (n_heads, D) at out + b * out_stride, fp32 (decode) or bf16 (the input of a wo GEMM).
template <typename Out>
void attention_decode(const DecodeRows& r, float* part_o, float* part_ml, Out* out, int out_stride, int n_parts,
                      int n_heads, int n_kv_heads, int D, const Launch& l) {
    if (D % 8 != 0 || D > ATT_MAX_D) fail("attention: head_dim %d must be a multiple of 8 and <= %d", D, ATT_MAX_D);
    if (n_kv_heads < 1 || n_heads % n_kv_heads != 0)
        fail("attention: %d heads are not a multiple of %d kv heads", n_heads, n_kv_heads);
    if (n_parts < 1) fail("attention: n_parts must be >= 1, got %d", n_parts);
    if (r.n_rows < 1 || r.n_rows > 65535) fail("attention: %d rows, must be in 1..65535", r.n_rows);
    if (r.n_rows > 1 && (r.q_stride < n_heads * D || out_stride < n_heads * D))
        fail("attention: row strides %d, %d are shorter than a row of %d", r.q_stride, out_stride, n_heads * D);
    size_t smem = size_t(std::min(n_heads / n_kv_heads, ATT_MAX_GROUP)) * D * sizeof(float);
    attention_decode_kernel<<<dim3(attention_blocks_per_part(n_heads, n_kv_heads), n_parts, r.n_rows), ATT_THREADS,
                              smem, l.stream>>>(r.q, r.q_stride, r.K, r.V, r.pos, r.tables, r.table_off, part_o,
                                                part_ml, n_heads, n_kv_heads, D);
    CUDA_CHECK(cudaGetLastError());
    attention_reduce_kernel<Out><<<dim3(n_heads, r.n_rows), 256, 0, l.stream>>>(part_o, part_ml, r.pos, out,
                                                                                  out_stride, n_parts, D);
    CUDA_CHECK(cudaGetLastError());
}

// ============================================================================
// Prefill kernels: a chunk of prompt tokens at once; projections are cuBLAS GEMMs (tensor cores, fp32
// accumulation), attention is a tiled causal kernel with online softmax
// ============================================================================

// Y (n, rows) = X (n, cols) W^T (+ Y when accumulate), W (rows, cols) bf16 row-major, X bf16, Y fp32 with
// row stride ldy (>= rows: Y may be a column range of a wider matrix, as q | k | v).
// cuBLAS is column-major: a row-major (rows, cols) W is a column-major (cols, rows) matrix, so
// Y^T (rows, n) = op_T(W) X^T with lda = ldb = cols and ldc = ldy.
inline void gemm(cublasHandle_t h, const bf16* W, const bf16* X, float* Y, int n, int rows, int cols, bool accumulate,
                 int ldy = 0) {
    float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &alpha, W, CUDA_R_16BF, cols, X, CUDA_R_16BF,
                              cols, &beta, Y, CUDA_R_32F, ldy ? ldy : rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// out[r, c] = bf16(W[r, c]): a matrix of storage type T decoded (and rounded to bf16, as the tensor cores take
// it) for a prefill GEMM.   grid (rows), block 128
template <DType T>
static __global__ void dequantize_bf16_kernel(const uint8_t* W, uint64_t row_bytes, bf16* out, int cols) {
    bf16* o = out + size_t(blockIdx.x) * cols;
    for_row_values<T>(W + blockIdx.x * row_bytes, cols, threadIdx.x, blockDim.x, [&](int c, float v) { o[c] = f2bf(v); });
}
// W: a device view (rows, cols); out: (rows, cols) bf16.
inline void dequantize_bf16(const Tensor& W, bf16* out, const Launch& l) {
    if (W.rows < 1 || W.cols < 1) fail("dequantize_bf16: bad shape %d x %d", W.rows, W.cols);
    with_dtype(W.type, "dequantize_bf16", [&](auto T) {
        dequantize_bf16_kernel<T.value><<<W.rows, 128, 0, l.stream>>>(W.data, W.row_bytes(), out, W.cols);
    });
    CUDA_CHECK(cudaGetLastError());
}

constexpr int TC_BQ = 64;  // queries per block: 4 warps, 16 query rows each
constexpr int TC_BK = 64;  // keys per tile

// Shared-memory layout of attention_prefill_kernel<D>: byte offsets of its arrays, each 32-byte aligned
// (wmma's requirement); rows padded by 16 bytes so that a warp's row accesses spread over the banks.
template <int D>
struct TcSmem {
    static constexpr int LD = D + 8;       // row stride (elements) of Q, K, V (bf16)
    static constexpr int LS = TC_BK + 4;   // of S (fp32)
    static constexpr int LP = TC_BK + 8;   // of P (bf16)
    static constexpr int LO = D + 4;       // of O (fp32)
    static constexpr size_t up32(size_t b) { return (b + 31) / 32 * 32; }
    static constexpr size_t max(size_t a, size_t b) { return a > b ? a : b; }
    // Q is only read into registers before the first tile, so the scores S reuse its space.
    static constexpr size_t Q = 0;                                               // (TC_BQ, LD) bf16 queries
    static constexpr size_t S = 0;                                               // (TC_BQ, LS) fp32 scores
    static constexpr size_t K = up32(max(TC_BQ * LD * 2, TC_BQ * LS * 4));       // (TC_BK, LD) bf16 key tile
    static constexpr size_t V = up32(K + TC_BK * LD * 2);                        // (TC_BK, LD) bf16 value tile
    static constexpr size_t P = up32(V + TC_BK * LD * 2);                        // (TC_BQ, LP) bf16 probabilities
    static constexpr size_t O = up32(P + TC_BQ * LP * 2);                        // (TC_BQ, LO) fp32 output
    static constexpr size_t BYTES = up32(O + TC_BQ * LO * 4);  // D = 128: 93 KB, D = 256: 173 KB
};

// Causal attention for n queries of one sequence at positions *pos + i against its cached positions 0 .. *pos + i
// (the chunk's own keys were written by qkv_epilogue first; position t is pool row kv_row(table, t)), both
// products on tensor cores (wmma: bf16 in, fp32 accumulation). Block (h, qb) owns queries qb*TC_BQ .. +TC_BQ of
// head h; warp w owns 16 of those rows and, per key tile of TC_BK keys (gathered through the table):
//   S = Q K^T (wmma)  ->  per row: s = S / sqrt(D) masked causally, m' = max(m, max s), p = exp(s - m'),
//   l = l exp(m - m') + sum p, O = O exp(m - m')  ->  O += P V (wmma, P rounded to bf16)
// and at the end out = O / l. Q is rounded to bf16 for the tensor cores (the model's attention runs in bf16).
// Two lanes share a row in the softmax (each half the keys and half of O); m and l stay in their registers.
// O lives in shared memory because a wmma accumulator's element-to-row map is unspecified, so it cannot be
// rescaled per row in registers.   grid (n_heads, ceil(n / TC_BQ)), block 128, smem TcSmem<D>::BYTES
template <int D>
static __global__ void __launch_bounds__(128)
    attention_prefill_kernel(const float* qkv, const bf16* K, const bf16* V, const int* pos, const int* table,
                             bf16* out, int n, int n_heads, int n_kv_heads) {
    namespace wmma = nvcuda::wmma;
    using L = TcSmem<D>;
    using frag_q = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
    using frag_kt = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
    using frag_v = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
    using frag_acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
    extern __shared__ __align__(128) float4 tc_smem4[];  // wmma needs 32-byte aligned tiles
    unsigned char* smem = reinterpret_cast<unsigned char*>(tc_smem4);
    bf16* Qs = reinterpret_cast<bf16*>(smem + L::Q);
    bf16* Ks = reinterpret_cast<bf16*>(smem + L::K);
    bf16* Vs = reinterpret_cast<bf16*>(smem + L::V);
    float* Ss = reinterpret_cast<float*>(smem + L::S);
    bf16* Ps = reinterpret_cast<bf16*>(smem + L::P);
    float* Os = reinterpret_cast<float*>(smem + L::O);
    auto tc = [](const bf16* p) { return reinterpret_cast<const __nv_bfloat16*>(p); };

    int h = blockIdx.x, q0 = blockIdx.y * TC_BQ, tid = threadIdx.x, lane = tid % 32, r0 = (tid / 32) * 16;
    int q_dim = n_heads * D, kv_dim = n_kv_heads * D, stride = q_dim + 2 * kv_dim;
    int kv_off = (h / (n_heads / n_kv_heads)) * D, p0 = *pos;
    int kv_end = p0 + min(n, q0 + TC_BQ);  // keys needed by the block's last query
    for (int e = tid; e < TC_BQ * D; e += 128) {
        int r = e / D, d = e % D;
        Qs[r * L::LD + d] = f2bf(q0 + r < n ? qkv[size_t(q0 + r) * stride + h * D + d] : 0.0f);
        Os[r * L::LO + d] = 0.0f;
    }
    __syncthreads();
    frag_q q[D / 16];  // the warp's 16 query rows, kept in registers for every tile (Qs is S from here on;
                       // the barrier after the first K/V tile orders every warp's loads before any S store)
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) wmma::load_matrix_sync(q[kk], tc(Qs + r0 * L::LD + kk * 16), L::LD);

    int row = r0 + lane / 2, half = lane % 2;  // this lane's row, and which half of the keys / of O it handles
    int q_pos = p0 + q0 + row;                 // rows past n are computed, not stored
    float scale = rsqrtf(float(D)), m = -INFINITY, l = 0;
    for (int k0 = 0; k0 < kv_end; k0 += TC_BK) {
        for (int e = tid; e < TC_BK * D / 8; e += 128) {  // 16-byte copies of the K and V tiles, zeros past kv_end
            int r = e / (D / 8), c = e % (D / 8);
            bool ok = k0 + r < kv_end;
            size_t at = ok ? size_t(kv_row(table, k0 + r)) * kv_dim + kv_off : 0;
            uint4 zero = make_uint4(0, 0, 0, 0);
            uint4* k_dst = reinterpret_cast<uint4*>(Ks + r * L::LD + 8 * c);
            uint4* v_dst = reinterpret_cast<uint4*>(Vs + r * L::LD + 8 * c);
            *k_dst = ok ? reinterpret_cast<const uint4*>(K + at)[c] : zero;
            *v_dst = ok ? reinterpret_cast<const uint4*>(V + at)[c] : zero;
        }
        __syncthreads();
        // S (16, TC_BK) = Q K^T for the warp's rows: K's rows read as the columns of K^T
#pragma unroll
        for (int j = 0; j < TC_BK / 16; j++) {
            frag_acc s;
            wmma::fill_fragment(s, 0.0f);
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                frag_kt kt;
                wmma::load_matrix_sync(kt, tc(Ks + j * 16 * L::LD + kk * 16), L::LD);
                wmma::mma_sync(s, q[kk], kt, s);
            }
            wmma::store_matrix_sync(Ss + r0 * L::LS + j * 16, s, L::LS, wmma::mem_row_major);
        }
        __syncwarp();
        // online softmax of this lane's half row; m' is finite: key 0 is in the first tile and never masked
        const float* srow = Ss + row * L::LS;
        int c0 = half * (TC_BK / 2);
        float mx = -INFINITY;
        for (int c = c0; c < c0 + TC_BK / 2; c++) mx = fmaxf(mx, k0 + c <= q_pos ? srow[c] * scale : -INFINITY);
        float m_new = fmaxf(m, fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1)));
        float corr = expf(m - m_new), psum = 0;  // corr = 0 on the first tile (m = -inf)
        for (int c = c0; c < c0 + TC_BK / 2; c++) {
            bf16 p = f2bf(k0 + c <= q_pos ? expf(srow[c] * scale - m_new) : 0.0f);
            Ps[row * L::LP + c] = p;
            psum += bf2f(p);  // the sum of what P V multiplies, so the normalisation matches
        }
        l = l * corr + psum + __shfl_xor_sync(0xffffffffu, psum, 1);
        m = m_new;
        for (int d = half * (D / 2); d < (half + 1) * (D / 2); d++) Os[row * L::LO + d] *= corr;
        __syncwarp();
        // O (16, D) += P (16, TC_BK) V (TC_BK, D), the accumulators round-tripping through Os
#pragma unroll
        for (int j = 0; j < D / 16; j++) {
            frag_acc o;
            wmma::load_matrix_sync(o, Os + r0 * L::LO + j * 16, L::LO, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < TC_BK / 16; kk++) {
                frag_q p;
                frag_v v;
                wmma::load_matrix_sync(p, tc(Ps + r0 * L::LP + kk * 16), L::LP);
                wmma::load_matrix_sync(v, tc(Vs + kk * 16 * L::LD + j * 16), L::LD);
                wmma::mma_sync(o, p, v, o);
            }
            wmma::store_matrix_sync(Os + r0 * L::LO + j * 16, o, L::LO, wmma::mem_row_major);
        }
        __syncthreads();  // every warp is done with the K and V tiles (and its own Os stores are visible)
    }
    if (q0 + row >= n) return;
    bf16* dst = out + size_t(q0 + row) * q_dim + h * D;
    for (int d = half * (D / 2); d < (half + 1) * (D / 2); d++) dst[d] = f2bf(Os[row * L::LO + d] / l);
}

// The shared memory is TcSmem<D>::BYTES: 93 KB at D = 128 (every Qwen head size is 64 or 128), which every GPU
// from sm_80 up gives a block; allow_smem refuses clearly where the device cannot.
template <int D>
void attention_prefill_launch(const float* qkv, const bf16* K, const bf16* V, const int* pos, const int* table,
                              bf16* out, int n, int n_heads, int n_kv_heads, const Launch& l) {
    allow_smem(attention_prefill_kernel<D>, TcSmem<D>::BYTES, l, "attention_prefill");
    attention_prefill_kernel<D><<<dim3(n_heads, ceil_div(n, TC_BQ)), 128, TcSmem<D>::BYTES, l.stream>>>(
        qkv, K, V, pos, table, out, n, n_heads, n_kv_heads);
    CUDA_CHECK(cudaGetLastError());
}

// Calls f(std::integral_constant<int, D>()) for the head sizes the prefill kernels are compiled for.
template <typename F>
void with_head_dim(int D, const char* what, F&& f) {
    switch (D) {
    case 16: return f(std::integral_constant<int, 16>());
    case 32: return f(std::integral_constant<int, 32>());
    case 64: return f(std::integral_constant<int, 64>());
    case 128: return f(std::integral_constant<int, 128>());
    case 256: return f(std::integral_constant<int, 256>());
    default: fail("%s: head_dim %d is not one of 16, 32, 64, 128, 256", what, D);
    }
}

inline void check_prefill_shape(int n, int n_heads, int n_kv_heads, const char* what) {
    if (n < 1) fail("%s: n must be >= 1, got %d", what, n);
    if (n_kv_heads < 1 || n_heads % n_kv_heads != 0)
        fail("%s: %d heads are not a multiple of %d kv heads", what, n_heads, n_kv_heads);
}

// qkv: (n, q_dim + 2*kv_dim) fp32 with q already rotated (the q columns are read); K, V: (pool rows, kv_dim)
// bf16 of one layer holding the sequence's positions 0 .. *pos + n - 1 in the pool rows its block table
// (device ints, kv_blocks_for(*pos + n) of them) gives; out: (n, q_dim) bf16 (the input of the wo GEMM).
inline void attention_prefill(const float* qkv, const bf16* K, const bf16* V, const int* pos, const int* table,
                              bf16* out, int n, int n_heads, int n_kv_heads, int D, const Launch& l) {
    check_prefill_shape(n, n_heads, n_kv_heads, "attention_prefill");
    with_head_dim(D, "attention_prefill", [&](auto d) {
        attention_prefill_launch<decltype(d)::value>(qkv, K, V, pos, table, out, n, n_heads, n_kv_heads, l);
    });
}


// ============================================================================
// Sampling kernels: the Sampler's rules (the sampler section of qwen.hpp) on the device, so that only the chosen id
// crosses to the host. The uniform draw comes from the host Sampler's Rng, so a seed behaves the same.
// ============================================================================

constexpr int SAMPLE_THREADS = 1024;  // the selection kernels run as one block

// The Sampler's steps 1-3 over one list of distinct ids: PEN_BIAS l += v[i] and PEN_REPEAT (HF: l < 0 ? l * rep :
// l / rep), both clamped to the finite floats as on the CPU; PEN_SUBTRACT l -= v[i] (presence + frequency).
// grid (ceil(n / 256)), block 256
enum PenaltyOp : int { PEN_BIAS, PEN_REPEAT, PEN_SUBTRACT };
static __global__ void penalty_kernel(float* logits, const int* ids, const float* values, int n, int op, float rep) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float& l = logits[ids[i]];
    if (op == PEN_BIAS) l = fminf(fmaxf(l + values[i], -FLT_MAX), FLT_MAX);
    else if (op == PEN_REPEAT) l = fminf(fmaxf(l < 0 ? l * rep : l / rep, -FLT_MAX), FLT_MAX);
    else l -= values[i];
}
// ids (n) distinct, in [0, vocab); values (n): PEN_BIAS, PEN_SUBTRACT. Lists that share ids must be separate
// launches (one after the other on the stream), in the Sampler's order.
inline void apply_penalty(float* logits, const int* ids, const float* values, int n, PenaltyOp op, float rep,
                          const Launch& l) {
    if (n <= 0) return;
    penalty_kernel<<<ceil_div(n, 256), 256, 0, l.stream>>>(logits, ids, values, n, int(op), rep);
    CUDA_CHECK(cudaGetLastError());
}

// out[i] = in[i] where bit i of the token mask is set (bit i % 32 of word i / 32), else -inf: structured output,
// the Sampler's step 2b. in may be out.   grid (ceil(n / 256)), block 256
static __global__ void mask_logits_kernel(const float* in, const uint32_t* mask, int n, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = (mask[i >> 5] >> (i & 31)) & 1u ? in[i] : -INFINITY;
}
// in, out: (n) fp32; mask: ((n + 31) / 32) words on the device.
inline void mask_logits(const float* in, const uint32_t* mask, int n, float* out, const Launch& l) {
    if (n < 1) fail("mask_logits: n must be >= 1, got %d", n);
    mask_logits_kernel<<<ceil_div(n, 256), 256, 0, l.stream>>>(in, mask, n, out);
    CUDA_CHECK(cudaGetLastError());
}

// Index of the largest value, lowest index on ties. Pairs (value, index) compared lexicographically.
struct ArgMax {
    float v;
    int i;
};
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
    return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}
struct Better {
    __device__ ArgMax operator()(ArgMax a, ArgMax b) const { return better(a, b); }
};
// *out = argmax_i x[i]; or ARGMAX_NOT_FINITE if some x[i] is NaN or +inf, ARGMAX_ALL_NEG_INF if every x[i] is
// -inf (the Sampler refuses both).   grid (1), block SAMPLE_THREADS
constexpr int ARGMAX_NOT_FINITE = -1, ARGMAX_ALL_NEG_INF = -2;
static __global__ void __launch_bounds__(SAMPLE_THREADS) argmax_kernel(const float* x, int n, int* out) {
    ArgMax best{-INFINITY, n};
    int bad = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        best = better(best, ArgMax{x[i], i});
        bad |= !(x[i] < INFINITY);  // true for NaN and +inf
    }
    bad = __syncthreads_or(bad);
    using Reduce = cub::BlockReduce<ArgMax, SAMPLE_THREADS>;
    __shared__ typename Reduce::TempStorage tmp;
    ArgMax r = Reduce(tmp).Reduce(best, Better());
    if (threadIdx.x == 0) *out = bad ? ARGMAX_NOT_FINITE : r.v == -INFINITY ? ARGMAX_ALL_NEG_INF : r.i;
}
// x: (n) fp32; out: one device int.
inline void argmax(const float* x, int n, int* out, const Launch& l) {
    if (n < 1) fail("argmax: n must be >= 1, got %d", n);
    argmax_kernel<<<1, SAMPLE_THREADS, 0, l.stream>>>(x, n, out);
    CUDA_CHECK(cudaGetLastError());
}

// p[i] = exp((x[i] - max) / T) * (1 / sum_j exp((x[j] - max) / T)), as the Sampler's softmax
// grid (1), block SAMPLE_THREADS
static __global__ void __launch_bounds__(SAMPLE_THREADS)
    softmax_kernel(const float* x, int n, float temperature, float* p) {
    float m = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, x[i]);
    m = block_max(m);
    using Reduce = cub::BlockReduce<double, SAMPLE_THREADS>;
    __shared__ typename Reduce::TempStorage tmp;
    __shared__ float inv_sum;
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float e = expf((x[i] - m) / temperature);
        p[i] = e;
        s += e;
    }
    double total = Reduce(tmp).Sum(s);
    if (threadIdx.x == 0) inv_sum = float(1.0 / total);
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) p[i] *= inv_sum;
}
// x, p: (n) fp32; temperature > 0 (0 is the greedy path, which needs no probabilities).
inline void softmax(const float* x, int n, float temperature, float* p, const Launch& l) {
    if (n < 1 || !(temperature > 0)) fail("softmax: n %d must be >= 1 and temperature %g > 0", n, temperature);
    softmax_kernel<<<1, SAMPLE_THREADS, 0, l.stream>>>(x, n, temperature, p);
    CUDA_CHECK(cudaGetLastError());
}

// Block-wide helpers over p[0..n) for one block of SAMPLE_THREADS threads.
__device__ inline double block_sum_prefix(const float* p, int n) {
    using Reduce = cub::BlockReduce<double, SAMPLE_THREADS>;
    __shared__ typename Reduce::TempStorage tmp;
    __shared__ double total;
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += p[i];
    s = Reduce(tmp).Sum(s);
    if (threadIdx.x == 0) total = s;
    __syncthreads();
    double r = total;
    __syncthreads();
    return r;
}

// The first i in [0, n) whose running sum p[0] + ... + p[i] reaches the target (>= with or_equal, else >),
// or n when none does. Chunks of SAMPLE_THREADS are scanned in double, carrying the sum between chunks.
__device__ inline int first_prefix_over(const float* p, int n, double target, bool or_equal) {
    using Scan = cub::BlockScan<double, SAMPLE_THREADS>;
    __shared__ typename Scan::TempStorage tmp;
    __shared__ int found;
    __shared__ double carry;
    if (threadIdx.x == 0) {
        found = n;
        carry = 0;
    }
    __syncthreads();
    for (int base = 0; base < n; base += SAMPLE_THREADS) {
        int i = base + threadIdx.x;
        double incl, chunk_total;
        Scan(tmp).InclusiveSum(i < n ? double(p[i]) : 0.0, incl, chunk_total);
        incl += carry;
        if (i < n && (or_equal ? incl >= target : incl > target)) atomicMin(&found, i);
        __syncthreads();
        if (found < n) break;  // uniform: every thread reads it after the barrier
        if (threadIdx.x == 0) carry += chunk_total;
        __syncthreads();
    }
    int r = found;
    __syncthreads();
    return r;
}

// The first i in [0, n) with p[i] < threshold, or n (p sorted descending, so the rest are below too).
__device__ inline int first_below(const float* p, int n, float threshold) {
    __shared__ int found;
    if (threadIdx.x == 0) found = n;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (p[i] < threshold) {
            atomicMin(&found, i);
            break;
        }
    __syncthreads();
    int r = found;
    __syncthreads();
    return r;
}

struct SampleFilter {
    int top_k = 0;       // 0 = off (or >= n)
    float top_p = 1.0f;  // 1 = off
    float min_p = 0.0f;  // 0 = off
    float u = 0.0f;      // the uniform draw in [0, 1)
};

// The Sampler's filters and draw over p (n) sorted most probable first (ties by id); the kept set is a
// prefix: top-k (with the ties of the k-th, when top_k_on) -> top-p over the top-k mass -> min-p. Returns, in
// every thread, the index of the first kept token whose running mass exceeds u * (kept mass).
// For one block of SAMPLE_THREADS threads.
__device__ inline int filter_and_draw(const float* p, int n, const SampleFilter& f, bool top_k_on) {
    __shared__ int keep_s;
    if (threadIdx.x == 0) {
        int keep = n;
        if (top_k_on) {
            keep = f.top_k;
            while (keep < n && p[keep] >= p[f.top_k - 1]) keep++;  // ties of the k-th stay (rare, short)
        }
        keep_s = keep;
    }
    __syncthreads();
    int keep = keep_s;
    if (f.top_p < 1.0f) {  // token j stays while the mass before it is < top_p * (top-k mass, else 1)
        double total = top_k_on ? block_sum_prefix(p, keep) : 1.0;
        keep = min(keep, first_prefix_over(p, keep, double(f.top_p) * total, true) + 1);
    }
    if (f.min_p > 0.0f) keep = max(1, first_below(p, keep, f.min_p * p[0]));
    double mass = block_sum_prefix(p, keep);
    return min(first_prefix_over(p, keep, double(f.u) * mass, false), keep - 1);
}

// Chooses the token from probabilities p (n). With filters, p and ids are sorted most probable first and
// filter_and_draw applies them. Without filters p is in id order (ids == nullptr) and every token is kept, as
// the Sampler does.   grid (1), block SAMPLE_THREADS
static __global__ void __launch_bounds__(SAMPLE_THREADS)
    select_kernel(const float* p, const int* ids, int n, SampleFilter f, int* out) {
    SampleFilter none;
    none.u = f.u;
    int j = filter_and_draw(p, n, ids ? f : none, ids && f.top_k > 0 && f.top_k < n);
    if (threadIdx.x == 0) *out = ids ? ids[j] : j;
}

// p: (n) fp32, sorted most probable first when ids (n) is given; out: one device int, the chosen id.
inline void select_token(const float* p, const int* ids, int n, const SampleFilter& f, int* out, const Launch& l) {
    if (n < 1) fail("select_token: n must be >= 1, got %d", n);
    select_kernel<<<1, SAMPLE_THREADS, 0, l.stream>>>(p, ids, n, f, out);
    CUDA_CHECK(cudaGetLastError());
}

// The Sampler's logprobs (token_logprobs) of the model's logits x (n): lse = m + log sum exp(x - m) (the sum in
// double); out[0] = x[*chosen] - lse (NaN if *chosen is not an id: the argmax's error codes), and for k < top_n the
// k-th largest x (ties: lowest id) in top_ids[k], out[1 + k] its log p. Each of the top_n rounds is a block argmax
// over the values after the previous pick in that order.   grid (1), block SAMPLE_THREADS
static __global__ void __launch_bounds__(SAMPLE_THREADS)
    logprobs_kernel(const float* x, int n, const int* chosen, int top_n, int* top_ids, float* out) {
    float m = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, x[i]);
    m = block_max(m);
    using Sum = cub::BlockReduce<double, SAMPLE_THREADS>;
    using Reduce = cub::BlockReduce<ArgMax, SAMPLE_THREADS>;
    __shared__ typename Sum::TempStorage sum_tmp;
    __shared__ typename Reduce::TempStorage max_tmp;
    __shared__ double lse_s;
    __shared__ ArgMax prev_s;
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += double(expf(x[i] - m));
    double total = Sum(sum_tmp).Sum(s);
    if (threadIdx.x == 0) {
        lse_s = double(m) + log(total);
        int c = *chosen;
        out[0] = c >= 0 && c < n ? float(double(x[c]) - lse_s) : NAN;
        prev_s = ArgMax{INFINITY, -1};
    }
    __syncthreads();
    for (int k = 0; k < top_n; k++) {
        ArgMax prev = prev_s, best{-INFINITY, n};
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            if (x[i] < prev.v || (x[i] == prev.v && i > prev.i)) best = better(best, ArgMax{x[i], i});
        ArgMax r = Reduce(max_tmp).Reduce(best, Better());
        if (threadIdx.x == 0) {
            top_ids[k] = r.i;
            out[1 + k] = float(double(r.v) - lse_s);
            prev_s = r;
        }
        __syncthreads();
    }
}
// x: (n) fp32; chosen: one device int; top_ids: (top_n) ints, out: (1 + top_n) floats on the device.
inline void logprobs(const float* x, int n, const int* chosen, int top_n, int* top_ids, float* out, const Launch& l) {
    if (n < 1 || top_n < 0 || top_n > std::min(n, MAX_TOP_LOGPROBS))
        fail("logprobs: n %d must be >= 1 and top_n %d in [0, min(n, %d)]", n, top_n, MAX_TOP_LOGPROBS);
    logprobs_kernel<<<1, SAMPLE_THREADS, 0, l.stream>>>(x, n, chosen, top_n, top_ids, out);
    CUDA_CHECK(cudaGetLastError());
}

// ============================================================================
// Device memory: allocations, the weights upload through pinned staging buffers, the decode step
// ============================================================================

// True when a CUDA device can be used (no failure: a machine without a GPU just says no).
inline bool device_available() {
    int n = 0;
    if (cudaGetDeviceCount(&n) == cudaSuccess && n > 0) return true;
    cudaGetLastError();  // clear the error (no driver, no device) so that it does not surface later
    return false;
}

// Why the engine cannot run on the current device, or "" when it can. The bf16 GEMMs need compute capability
// 8.0 (Ampere) or newer, and this build must hold kernels for the device (see CUDA_ARCH in the Makefile).
inline std::string device_unsupported() {
    int dev = 0;
    cudaDeviceProp prop;
    cudaFuncAttributes attr;
    char why[512] = "";  // room for the 256-byte device name
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
        snprintf(why, sizeof why, "cannot query CUDA device %d", dev);
    else if (prop.major < 8)
        snprintf(why, sizeof why, "%s has compute capability %d.%d; the CUDA engine needs 8.0 or newer", prop.name,
                 prop.major, prop.minor);
    else if (cudaFuncGetAttributes(&attr, embed_kernel<DT_BF16>) != cudaSuccess)
        snprintf(why, sizeof why, "this build has no kernels for %s (rebuild with CUDA_ARCH=%d%d)", prop.name,
                 prop.major, prop.minor);
    cudaGetLastError();  // a failed query must not surface at the next launch check
    return why;
}

// Device allocations freed together on destruction (an engine's buffers live and die with it).
struct DeviceAllocs {
    std::vector<void*> ptrs;
    DeviceAllocs() = default;
    DeviceAllocs(const DeviceAllocs&) = delete;
    DeviceAllocs& operator=(const DeviceAllocs&) = delete;
    ~DeviceAllocs() {
        for (void* p : ptrs) cudaFree(p);
    }
    // `count` elements of T; `total` accumulates the bytes (for the memory report).
    template <typename T>
    T* get(size_t count, size_t& total) {
        size_t bytes = std::max<size_t>(count, 1) * sizeof(T);
        void* p = nullptr;
        cudaError_t e = cudaMalloc(&p, bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();  // clear it, or the next launch check would report this failure again
            fail("cannot allocate %.2f GB on the GPU: %s", bytes / 1e9, cudaGetErrorString(e));
        }
        ptrs.push_back(p);
        total += bytes;
        return static_cast<T*>(p);
    }
};

// Host -> device copies of large read-only memory (a file mapping): the bytes go chunk by chunk through two
// pinned buffers, alternately, so reading the next chunk from disk overlaps the DMA of the previous one.
// copy() may be called many times; finish() waits for the last DMA.
struct PinnedStaging {
    static constexpr size_t CHUNK = size_t(64) << 20;
    void* buf[2] = {nullptr, nullptr};  // (CHUNK) bytes each, pinned host memory
    cudaEvent_t done[2] = {nullptr, nullptr};  // the DMA out of buf[i] has finished
    size_t used = 0;                    // chunks sent so far: chunk i goes through buf[i % 2]
    PinnedStaging() {
        try {
            for (int i = 0; i < 2; i++) {
                CUDA_CHECK(cudaHostAlloc(&buf[i], CHUNK, cudaHostAllocDefault));
                CUDA_CHECK(cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming));
            }
        } catch (...) {  // a destructor does not run after a throwing constructor: release what was made
            release();
            throw;
        }
    }
    PinnedStaging(const PinnedStaging&) = delete;
    PinnedStaging& operator=(const PinnedStaging&) = delete;
    ~PinnedStaging() { release(); }
    void release() {
        for (int i = 0; i < 2; i++) {
            if (done[i]) cudaEventSynchronize(done[i]), cudaEventDestroy(done[i]);
            if (buf[i]) cudaFreeHost(buf[i]);
            done[i] = nullptr;
            buf[i] = nullptr;
        }
    }
    void copy(void* dst, const uint8_t* src, size_t bytes, cudaStream_t stream) {
        for (size_t off = 0; off < bytes; off += CHUNK, used++) {
            int b = int(used % 2);
            size_t len = std::min(CHUNK, bytes - off);
            if (used >= 2) CUDA_CHECK(cudaEventSynchronize(done[b]));
            memcpy(buf[b], src + off, len);
            CUDA_CHECK(cudaMemcpyAsync(static_cast<uint8_t*>(dst) + off, buf[b], len, cudaMemcpyHostToDevice, stream));
            CUDA_CHECK(cudaEventRecord(done[b], stream));
        }
    }
    void finish(cudaStream_t stream) { CUDA_CHECK(cudaStreamSynchronize(stream)); }
};

// An engine's stream (non-blocking: graph capture needs a stream of its own) and cuBLAS handle,
// released on destruction, also when the engine's constructor fails half-way.
struct Handles {
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    Handles() = default;
    Handles(const Handles&) = delete;
    Handles& operator=(const Handles&) = delete;
    void create() {
        CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        CUBLAS_CHECK(cublasCreate(&cublas));
        CUBLAS_CHECK(cublasSetStream(cublas, stream));
    }
    ~Handles() {
        if (cublas) cublasDestroy(cublas);
        if (stream) cudaStreamSynchronize(stream), cudaStreamDestroy(stream);
    }
};

// Sets the decode step's token, position and pool row in device memory (a kernel argument is captured by value,
// so this can precede a graph replay with no host buffer to keep alive); step[3], the offset of the sequence's
// block table, stays 0.   grid (1), block 1
static __global__ void set_step_kernel(int* step, int token, int pos, int slot) {
    step[0] = token;
    step[1] = pos;
    step[2] = slot;
    step[3] = 0;
}
inline void set_step(int* step, int token, int pos, int slot, const Launch& l) {
    set_step_kernel<<<1, 1, 0, l.stream>>>(step, token, pos, slot);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace gpu
}  // namespace qwen

// ============================================================================
// GpuEngine: the forward pass on one GPU over a paged KV pool. A step of one sequence and one token (decode)
// runs the fused matvec kernels, replayed as one CUDA graph; any other step (a prompt, or many sequences) runs
// all its rows through cuBLAS GEMMs in passes of up to chunk_ rows: decode rows first (their attention in one
// batched launch), then each prompt chunk (the tensor-core attention through its sequence's block table).
// ============================================================================
namespace qwen {

struct GpuEngine : Engine {
    static constexpr int kMaxSeqs = 1024;  // sequences in one step (their block tables share one device buffer)

    // Copies the weights of a loaded model to the GPU and allocates a KV pool of kv_blocks blocks of KV_BLOCK
    // tokens (0, or fewer than one context needs: just enough for one context of context_size tokens).
    GpuEngine(const Model& m, int context_size, int kv_blocks = 0) : cfg_(m.config) {
        check_engine_model(m, context_size);
        if (kv_blocks < 0) fail("the KV pool size must be >= 0 blocks, got %d", kv_blocks);
        init(context_size, kv_blocks);
        upload_weights(m);
    }

    ~GpuEngine() override {
        if (h_.stream) cudaStreamSynchronize(h_.stream);  // a replay may still be running
        if (graph_) cudaGraphExecDestroy(graph_);
    }
    GpuEngine(const GpuEngine&) = delete;
    GpuEngine& operator=(const GpuEngine&) = delete;

    const Config& config() const override { return cfg_; }
    int context_size() const override { return context_; }
    const char* name() const override { return "cuda"; }


    int kv_blocks() const override { return n_blocks_; }

    // Sequence i's logits of the last step, copied to the host (each sequence's into its own row, so the
    // pointers of several sequences stay valid together until the next step).
    const float* logits(int i = 0) override {
        const size_t V = size_t(cfg_.vocab_size);
        float* host = &host_logits_[size_t(logit_slot(i)) * V];
        CUDA_CHECK(cudaMemcpyAsync(host, device_logits(i), V * sizeof(float), cudaMemcpyDeviceToHost, h_.stream));
        synchronize();
        return host;
    }

    // The Sampler's rules on the device; the Sampler supplies its parameters and its Rng's draw. A token mask
    // (allowed) crosses to the device as its bit set (n_vocab / 8 bytes), never the logits to the host.
    int sample(Sampler& s, int n_vocab, const std::vector<int>& tokens, size_t n_prompt,
               const uint32_t* allowed = nullptr, int i = 0) override {
        const float* lg = device_logits(i);
        if (n_vocab < 1 || n_vocab > cfg_.vocab_size)
            fail("sample: n_vocab %d must be in 1..%d", n_vocab, cfg_.vocab_size);
        const SamplingParams& p = s.params;
        const float* src = apply_penalties(lg, p, n_vocab, tokens, n_prompt);
        if (allowed) {
            CUDA_CHECK(cudaMemcpyAsync(mask_, allowed, size_t(gpu::ceil_div(n_vocab, 32)) * sizeof(uint32_t),
                                       cudaMemcpyHostToDevice, h_.stream));
            gpu::mask_logits(src, mask_, n_vocab, work_, launch_);
            src = work_;
        }
        gpu::argmax(src, n_vocab, choice_, launch_);  // the greedy choice, and the check that the logits are usable
        if (p.temperature == 0.0f) return finish_sample(lg, s, n_vocab, 0);
        gpu::SampleFilter f;
        f.top_k = p.top_k;
        f.top_p = p.top_p;
        f.min_p = p.min_p;
        f.u = s.rng.uniform();
        bool filtered = (p.top_k > 0 && p.top_k < n_vocab) || p.top_p < 1.0f || p.min_p > 0.0f;
        gpu::softmax(src, n_vocab, p.temperature, prob_, launch_);
        if (!filtered) {
            gpu::select_token(prob_, nullptr, n_vocab, f, choice_ + 1, launch_);
            return finish_sample(lg, s, n_vocab, 1);
        }
        size_t tmp_bytes = sort_tmp_bytes_;  // sort by probability, descending; stable, so ties stay in id order
        CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(sort_tmp_, tmp_bytes, prob_, prob_sorted_, ids_,
                                                             ids_sorted_, n_vocab, 0, 32, h_.stream));
        gpu::select_token(prob_sorted_, ids_sorted_, n_vocab, f, choice_ + 1, launch_);
        return finish_sample(lg, s, n_vocab, 1);
    }

    // Decode steps are replayed from a captured CUDA graph (default on); off runs the same kernels one by one.
    void set_graphs(bool on) { use_graph_ = on; }
    void synchronize() { CUDA_CHECK(cudaStreamSynchronize(h_.stream)); }
    // Rows of one GEMM pass (default min(512, context)): a prompt chunk's length, or a step's rows in passes of
    // this many; smaller only, for tests of the chunking.
    void set_prefill_chunk(int n) { chunk_ = std::max(1, std::min(n, rows_cap_)); }
    // Rows of a non-bf16 matrix decoded per GEMM (default: all of a layer matrix, at least 4096 of lm_head);
    // smaller only, for tests of the slicing.
    void set_decode_slice(int rows) { slice_rows_ = std::max(1, rows); }

    // Device memory the engine allocated, by purpose (bytes).
    size_t weight_bytes() const { return bytes_weights_; }  // the weights as uploaded, plus the prefill's
                                                             // matrix scratch when some are not bf16
    size_t kv_bytes() const { return bytes_kv_; }
    size_t scratch_bytes() const { return bytes_scratch_; }
    const Weights& device_weights() const { return w_; }

  protected:
    // One sequence, one token, logits wanted: the decode kernels (graph). Anything else: GEMM passes.
    void step_checked(const std::vector<SeqStep>& batch) override {
        if (batch.size() > size_t(kMaxSeqs)) fail("cuda: a step of %zu sequences; at most %d", batch.size(), kMaxSeqs);
        const SeqStep& s = batch[0];
        n_step_seqs_ = int(batch.size());
        slot_of_seq_.assign(batch.size(), -1);
        host_logits_.resize(batch.size() * size_t(cfg_.vocab_size));
        if (batch.size() == 1 && s.n == 1 && s.want_logits) {
            upload_decode_table(s.blocks, kv_blocks_for(s.pos + 1));
            slot_of_seq_[0] = 0;
            return decode(s.tokens[0], s.pos, int(kv_pool_row(s.blocks, s.pos)));
        }
        run_passes(batch);
    }

  private:
    struct CudaFree {
        void operator()(void* p) const { cudaFree(p); }
    };

    Config cfg_;
    int context_ = 0;
    int n_blocks_ = 0;   // blocks in the KV pool
    int max_table_ = 0;  // kv_blocks_for(context_): the longest block table
    int rows_cap_ = 0;   // rows the pass buffers hold: min(512, context)
    int chunk_ = 0;      // rows of one GEMM pass (<= rows_cap_)
    gpu::DeviceAllocs mem_;
    size_t bytes_weights_ = 0, bytes_kv_ = 0, bytes_scratch_ = 0;
    gpu::Handles h_;  // the engine's stream and cuBLAS handle
    gpu::Launch launch_;
    Weights w_;  // device views, shapes and types as in the model's Weights
    bf16* wbf_ = nullptr;  // (wbf_elems) bf16: a GEMM's decoded weights (the largest layer matrix not stored as
                           // bf16, and at least 4096 rows of a non-bf16 lm_head)
    size_t wbf_elems_ = 0;
    int slice_rows_ = INT32_MAX;  // at most this many rows per decode into wbf_ (see set_decode_slice)

    // The KV pool: block b holds the pool rows b * KV_BLOCK .. b * KV_BLOCK + KV_BLOCK - 1 of every layer.
    bf16* k_cache_ = nullptr;    // (n_layers, n_blocks * KV_BLOCK, kv_dim) bf16, after RoPE
    bf16* v_cache_ = nullptr;    // (n_layers, n_blocks * KV_BLOCK, kv_dim) bf16
    float* inv_freq_ = nullptr;  // (head_dim / 2) RoPE frequencies theta^(-2i / head_dim)
    int* step_ = nullptr;        // (4) the decode step: token id, position, its pool row, 0 (its table's offset)
    int* tables_ = nullptr;      // (kMaxSeqs * max_table) the step's block tables, one after another; the decode
                                 // step's table at offset 0 (the graph reads it there)
    std::vector<int> decode_table_;  // the host copy of tables_[0 ..) while it holds the decode step's table
    // Host sources of a step's uploads, kept from step to step (a copy from pageable memory returns once its
    // source is staged, so refilling them for the next upload is safe).
    std::vector<int> tables_host_;   // the step's block tables, as tables_ gets them
    std::vector<int> pass_host_;     // (5, rows_cap) a pass's rows, as rows_ gets them

    // decode, one token
    float* x_ = nullptr;        // (dim) residual stream
    float* qkv_ = nullptr;      // (q_dim + 2*kv_dim) projections; q rotated in place
    float* att_ = nullptr;      // (q_dim) attention output
    float* ffn_ = nullptr;      // (ffn_dim) silu(gate) * up
    int n_parts_ = 1;           // context chunks per head in split attention of one row
    float* part_o_ = nullptr;   // (n_parts + rows_cap, n_heads, head_dim) partial attention outputs (a batch of B
                                // decode rows uses B * ceil(n_parts / B) <= n_parts + B - 1 parts)
    float* part_ml_ = nullptr;  // (n_parts + rows_cap, n_heads, 2) partial max and sum of exponentials
    std::unique_ptr<float, CudaFree> logits_buf_;  // owns logits_ (grown by reserve_logits)
    float* logits_ = nullptr;   // (logits_rows, vocab_size): row k the logits of the step's k-th sequence that
                                // wants them; row 0 the decode step's
    int logits_rows_ = 0;
    int n_step_seqs_ = 0;              // sequences in the last step
    std::vector<int> slot_of_seq_;     // (n_step_seqs) each one's row of logits_, or -1 (none wanted)

    // a GEMM pass, up to chunk_ rows (a prompt chunk, or the rows of a batched step)
    int* rows_ = nullptr;    // (5, rows_cap) per row: token id, position, pool row, table offset; then the rows
                             // whose logits are wanted (see run_pass)
    float* X_ = nullptr;     // (chunk, dim) residual stream
    bf16* Xn_ = nullptr;     // (chunk, dim) normalised, the input of a GEMM
    float* QKV_ = nullptr;   // (chunk, q_dim + 2*kv_dim)
    bf16* A_ = nullptr;      // (chunk, q_dim) attention output
    float* GU_ = nullptr;    // (chunk, 2*ffn_dim) gate | up
    bf16* H_ = nullptr;      // (chunk, ffn_dim) silu(gate) * up

    // sampling
    float* work_ = nullptr;         // (vocab_size) logits after penalties
    float* prob_ = nullptr;         // (vocab_size) probabilities in id order
    float* prob_sorted_ = nullptr;  // (vocab_size) most probable first
    int* ids_ = nullptr;            // (vocab_size) 0, 1, 2, ...
    int* ids_sorted_ = nullptr;     // (vocab_size) ids in prob_sorted_ order
    int* pen_ids_ = nullptr;        // (3 * vocab_size) ids of the logit bias, the repetition and the other penalties
    float* pen_vals_ = nullptr;     // (3 * vocab_size) their values (bias; presence + frequency * count)
    int* lp_ids_ = nullptr;         // (MAX_TOP_LOGPROBS) the most probable ids, for logprobs
    float* lp_vals_ = nullptr;      // (1 + MAX_TOP_LOGPROBS) the chosen token's log p, then theirs
    uint32_t* mask_ = nullptr;      // (ceil(vocab_size / 32)) the tokens a grammar allows, one bit each
    void* sort_tmp_ = nullptr;      // (sort_tmp_bytes_) cub radix-sort scratch
    size_t sort_tmp_bytes_ = 0;
    int* choice_ = nullptr;           // (2) int: the argmax (or an ARGMAX_ error code), the sampled id
    std::vector<float> host_logits_;  // (n_step_seqs, vocab_size) fp32 host copies returned by logits(i)

    cudaGraphExec_t graph_ = nullptr;  // the decode step, captured at the second step and replayed from then on
    bool use_graph_ = true;
    int decode_calls_ = 0;             // decode steps so far: the first runs uncaptured

    int qkv_dim() const { return cfg_.q_dim() + 2 * cfg_.kv_dim(); }
    size_t pool_rows() const { return size_t(n_blocks_) * KV_BLOCK; }
    bf16* k_layer(int l) const { return k_cache_ + size_t(l) * pool_rows() * cfg_.kv_dim(); }
    bf16* v_layer(int l) const { return v_cache_ + size_t(l) * pool_rows() * cfg_.kv_dim(); }

    // Sequence i's row of logits_, checked: it was in the last step and wanted logits.
    int logit_slot(int i) const {
        if (i < 0 || i >= n_step_seqs_ || slot_of_seq_[size_t(i)] < 0)
            fail("logits: sequence %d of the last step has no logits", i);
        return slot_of_seq_[size_t(i)];
    }
    const float* device_logits(int i) const { return logits_ + size_t(logit_slot(i)) * cfg_.vocab_size; }

    // ---- setup ----

    void init(int context_size, int kv_blocks) {
        int D = cfg_.head_dim;
        if (D != 16 && D != 32 && D != 64 && D != 128 && D != 256)
            fail("cuda: head_dim %d is not one of 16, 32, 64, 128, 256", D);
        if (!gpu::device_available()) fail("cuda: no CUDA device available");
        std::string why = gpu::device_unsupported();
        if (!why.empty()) fail("cuda: %s", why.c_str());
        context_ = context_size;
        max_table_ = kv_blocks_for(context_);
        n_blocks_ = std::max(kv_blocks, max_table_);
        rows_cap_ = chunk_ = std::min(512, context_);
        h_.create();
        launch_ = gpu::make_launch(h_.stream);
        alloc_cache();
        alloc_scratch();
    }

    void alloc_cache() {
        const Config& c = cfg_;
        size_t n = size_t(c.n_layers) * pool_rows() * c.kv_dim();
        k_cache_ = mem_.get<bf16>(n, bytes_kv_);
        v_cache_ = mem_.get<bf16>(n, bytes_kv_);
        CUDA_CHECK(cudaMemsetAsync(k_cache_, 0, n * sizeof(bf16), h_.stream));
        CUDA_CHECK(cudaMemsetAsync(v_cache_, 0, n * sizeof(bf16), h_.stream));
        std::vector<float> f = rope_inv_freq(c);
        inv_freq_ = mem_.get<float>(f.size(), bytes_scratch_);
        CUDA_CHECK(cudaMemcpyAsync(inv_freq_, f.data(), f.size() * sizeof(float), cudaMemcpyHostToDevice, h_.stream));
        synchronize();  // f is a local
    }

    void alloc_scratch() {
        const Config& c = cfg_;
        size_t V = size_t(c.vocab_size), C = size_t(rows_cap_), s = 0;
        step_ = mem_.get<int>(4, s);
        tables_ = mem_.get<int>(size_t(kMaxSeqs) * max_table_, s);
        x_ = mem_.get<float>(c.dim, s);
        qkv_ = mem_.get<float>(qkv_dim(), s);
        att_ = mem_.get<float>(c.q_dim(), s);
        ffn_ = mem_.get<float>(c.ffn_dim, s);
        n_parts_ = gpu::attention_parts(c.n_heads, c.n_kv_heads, context_, launch_);
        part_o_ = mem_.get<float>((n_parts_ + C) * c.n_heads * c.head_dim, s);
        part_ml_ = mem_.get<float>((n_parts_ + C) * c.n_heads * 2, s);
        reserve_logits(1);
        rows_ = mem_.get<int>(5 * C, s);
        X_ = mem_.get<float>(C * c.dim, s);
        Xn_ = mem_.get<bf16>(C * c.dim, s);
        QKV_ = mem_.get<float>(C * qkv_dim(), s);
        A_ = mem_.get<bf16>(C * c.q_dim(), s);
        GU_ = mem_.get<float>(C * 2 * c.ffn_dim, s);
        H_ = mem_.get<bf16>(C * c.ffn_dim, s);
        work_ = mem_.get<float>(V, s);
        prob_ = mem_.get<float>(V, s);
        prob_sorted_ = mem_.get<float>(V, s);
        ids_ = mem_.get<int>(V, s);
        ids_sorted_ = mem_.get<int>(V, s);
        pen_ids_ = mem_.get<int>(3 * V, s);
        pen_vals_ = mem_.get<float>(3 * V, s);
        lp_ids_ = mem_.get<int>(MAX_TOP_LOGPROBS, s);
        lp_vals_ = mem_.get<float>(1 + MAX_TOP_LOGPROBS, s);
        mask_ = mem_.get<uint32_t>((V + 31) / 32, s);
        choice_ = mem_.get<int>(2, s);
        std::vector<int> iota(V);
        for (size_t i = 0; i < V; i++) iota[i] = int(i);
        CUDA_CHECK(cudaMemcpyAsync(ids_, iota.data(), V * sizeof(int), cudaMemcpyHostToDevice, h_.stream));
        CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, sort_tmp_bytes_, prob_, prob_sorted_, ids_,
                                                             ids_sorted_, int(V), 0, 32, h_.stream));
        sort_tmp_ = mem_.get<uint8_t>(sort_tmp_bytes_, s);
        bytes_scratch_ += s;
        synchronize();  // iota is a local
    }

    // The weights lie in a few regions of host memory (the file mappings, Model::owned, Model::widened): the span
    // of each region that holds weights is copied once, its layout kept, and every view points into the copy.
    // A span starts on the device at the same offset modulo 256 as on the host, so alignments carry over.
    void upload_weights(const Model& m) {
        struct Span {
            const uint8_t *begin, *end;  // the region's host bytes
            const uint8_t *lo = nullptr, *hi = nullptr;  // the part of it weights use
            uint8_t* dev = nullptr;       // the device copy of lo .. hi
        };
        std::vector<Span> spans = {{m.file.data, m.file.data + m.file.size},
                                   {m.owned.data(), m.owned.data() + m.owned.size()},
                                   {reinterpret_cast<const uint8_t*>(m.widened.data()),
                                    reinterpret_cast<const uint8_t*>(m.widened.data() + m.widened.size())}};
        for (const MappedFile& f : m.parts) spans.push_back({f.data, f.data + f.size});
        auto span_of = [&](const Tensor& t) -> Span& {
            for (Span& s : spans)
                if (t.data >= s.begin && t.data + t.bytes() <= s.end && s.begin != s.end) return s;
            fail("%s: a weight lies outside the model's memory", m.file.path.c_str());
        };
        size_t scratch = 0;  // elements of the largest layer matrix a prefill GEMM must decode first
        for_each_weight(cfg_, m.weights, [&](const TensorSpec& s, int, const Tensor& t) {
            if (!t) fail("%s: the weight tensor '%s' is missing", m.file.path.c_str(), s.gguf);
            Span& sp = span_of(t);
            sp.lo = sp.lo ? std::min(sp.lo, t.data) : t.data;
            sp.hi = std::max(sp.hi, t.data + t.bytes());
            if (s.per_layer && s.kind == TensorSpec::MATRIX && t.type != DT_BF16)
                scratch = std::max(scratch, size_t(t.rows) * size_t(t.cols));
        });
        size_t total = 0;  // each span: up to 255 bytes to keep its alignment, 16 before and after (matvec windows)
        for (Span& sp : spans)
            if (sp.lo) total += size_t(sp.hi - sp.lo) + 512;
        uint8_t* dev = mem_.get<uint8_t>(total, bytes_weights_);
        gpu::PinnedStaging staging;
        for (Span& sp : spans) {
            if (!sp.lo) continue;
            dev += 16 + (reinterpret_cast<uintptr_t>(sp.lo) - reinterpret_cast<uintptr_t>(dev + 16)) % 256;
            sp.dev = dev;
            staging.copy(dev, sp.lo, size_t(sp.hi - sp.lo), h_.stream);
            dev += (sp.hi - sp.lo) + 16;
        }
        staging.finish(h_.stream);
        for_each_weight(cfg_, w_, [&](const TensorSpec& s, int l, Tensor& d) {
            const Tensor& t = s.in(m.weights, l);
            Span& sp = span_of(t);
            d = t;
            d.data = sp.dev + (t.data - sp.lo);
        });
        if (cfg_.tied) w_.lm_head = w_.token_embd;
        const Tensor& head = cfg_.tied ? m.weights.token_embd : m.weights.lm_head;
        if (head.type != DT_BF16) scratch = std::max(scratch, size_t(std::min(head.rows, 4096)) * size_t(head.cols));
        if (scratch) wbf_ = mem_.get<bf16>(scratch, bytes_weights_);
        wbf_elems_ = scratch;
    }

    // ---- decode: one token ----

    gpu::QkvLayer qkv_layer(int l) const {
        const Layer& L = w_.layers[size_t(l)];
        gpu::QkvLayer q;
        q.bias[0] = L.bq.f32(), q.bias[1] = L.bk.f32(), q.bias[2] = L.bv.f32();
        q.q_norm = L.q_norm.f32();
        q.k_norm = L.k_norm.f32();
        q.k_cache = k_layer(l);
        q.v_cache = v_layer(l);
        return q;
    }

    // qkv_ = [Wq; Wk; Wv] rmsnorm(x_): one launch over the three matrices, or one per run of matrices of one
    // type when a mix stores them differently (llama.cpp's _M files give some layers a Q6_K attn_v).
    void qkv_matvec(const Layer& L) {
        const Tensor* parts[3] = {&L.wq, &L.wk, &L.wv};
        int col = 0;
        for (int i = 0, j; i < 3; i = j) {
            for (j = i + 1; j < 3 && parts[j]->type == parts[i]->type;) j++;
            gpu::MatRows M = j - i == 3 ? gpu::mat_rows({parts[0], parts[1], parts[2]})
                           : j - i == 2 ? gpu::mat_rows({parts[i], parts[i + 1]}) : gpu::mat_rows({parts[i]});
            gpu::rmsnorm_matvec(M, x_, L.attn_norm.f32(), cfg_.norm_eps, qkv_ + col, launch_);
            col += M.n_rows;
        }
    }

    // One transformer block for the token at step_[1]: x += attn(rmsnorm(x)); x += ffn(rmsnorm(x)).
    void decode_layer(int l) {
        const Config& c = cfg_;
        const gpu::Launch& L = launch_;
        const Layer& w = w_.layers[size_t(l)];
        const int* pos = step_ + 1;
        qkv_matvec(w);
        gpu::qkv_epilogue(qkv_, qkv_layer(l), inv_freq_, pos, step_ + 2, 1, c.n_heads, c.n_kv_heads, c.head_dim,
                          c.norm_eps, L);
        gpu::DecodeRows r;
        r.q = qkv_, r.K = k_layer(l), r.V = v_layer(l), r.pos = pos, r.tables = tables_, r.table_off = step_ + 3;
        gpu::attention_decode(r, part_o_, part_ml_, att_, 0, n_parts_, c.n_heads, c.n_kv_heads, c.head_dim, L);
        gpu::matvec_residual(w.wo, att_, x_, L);
        if (w.w_gate.type == w.w_up.type) {
            gpu::rmsnorm_matvec_swiglu(w.w_gate, w.w_up, x_, w.ffn_norm.f32(), c.norm_eps, ffn_, L);
        } else {  // gate and up of different types: two launches into the prefill's gate | up buffer, then SwiGLU
            gpu::rmsnorm_matvec(gpu::mat_rows({&w.w_gate}), x_, w.ffn_norm.f32(), c.norm_eps, GU_, L);
            gpu::rmsnorm_matvec(gpu::mat_rows({&w.w_up}), x_, w.ffn_norm.f32(), c.norm_eps, GU_ + c.ffn_dim, L);
            gpu::swiglu<float>(GU_, ffn_, 1, c.ffn_dim, L);
        }
        gpu::matvec_residual(w.w_down, ffn_, x_, L);
    }

    // The whole step after set_step: embedding, the blocks, final norm + lm_head. Reads token, position and
    // pool row from step_ and the block table from tables_, so the same kernels serve every position and every
    // table (and can be captured once).
    void decode_kernels() {
        const Config& c = cfg_;
        gpu::embed(w_.token_embd, step_, x_, 1, launch_);
        for (int l = 0; l < c.n_layers; l++) decode_layer(l);
        gpu::rmsnorm_matvec(gpu::mat_rows({&w_.lm_head}), x_, w_.out_norm.f32(), c.norm_eps, logits_, launch_);
    }

    // The first step runs uncaptured (one-time setup such as shared-memory opt-ins happens there); the
    // second captures the graph that later steps replay.
    void decode(int token, int pos, int slot) {
        gpu::set_step(step_, token, pos, slot, launch_);
        decode_calls_++;
        if (!use_graph_ || decode_calls_ == 1) return decode_kernels();
        if (!graph_) capture_decode_graph();
        CUDA_CHECK(cudaGraphLaunch(graph_, h_.stream));
    }

    void capture_decode_graph() {
        cudaGraph_t g = nullptr;
        CUDA_CHECK(cudaStreamBeginCapture(h_.stream, cudaStreamCaptureModeRelaxed));
        try {
            decode_kernels();
        } catch (...) {
            cudaStreamEndCapture(h_.stream, &g);
            if (g) cudaGraphDestroy(g);
            throw;
        }
        CUDA_CHECK(cudaStreamEndCapture(h_.stream, &g));
        cudaError_t e = cudaGraphInstantiate(&graph_, g, 0);
        cudaGraphDestroy(g);
        CUDA_CHECK(e);
    }

    // ---- device buffers that follow the step ----

    // The decode step's block table (its first n entries) into tables_[0 ..), unless it is there already.
    void upload_decode_table(const int* blocks, int n) {
        if (decode_table_.size() >= size_t(n) && std::equal(blocks, blocks + n, decode_table_.begin())) return;
        decode_table_.assign(blocks, blocks + n);
        CUDA_CHECK(cudaMemcpyAsync(tables_, decode_table_.data(), size_t(n) * sizeof(int), cudaMemcpyHostToDevice,
                                   h_.stream));
    }

    // Room for `rows` sequences' logits in logits_. A new buffer invalidates the captured graph (it wrote the old).
    void reserve_logits(int rows) {
        if (rows <= logits_rows_) return;
        rows = std::max(rows, 2 * logits_rows_);
        if (h_.stream) synchronize();  // the old buffer may still be in use
        void* p = nullptr;
        size_t bytes = size_t(rows) * cfg_.vocab_size * sizeof(float);
        cudaError_t e = cudaMalloc(&p, bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail("cannot allocate %.2f GB on the GPU: %s", bytes / 1e9, cudaGetErrorString(e));
        }
        bytes_scratch_ += bytes - size_t(logits_rows_) * cfg_.vocab_size * sizeof(float);
        logits_buf_.reset(static_cast<float*>(p));
        logits_ = logits_buf_.get();
        logits_rows_ = rows;
        if (graph_) cudaGraphExecDestroy(graph_), graph_ = nullptr;
    }

    // ---- the batched step: every row of every sequence through the GEMMs, in passes of up to chunk_ rows ----

    struct Row {  // one token of a step
        int seq;  // its sequence: an index into the step's batch
        int pos;  // its position in its sequence
    };

    // Rows in pass order: the decode rows (sequences of one token) first, so that their attention is one
    // batched launch over a contiguous range, then each longer sequence's rows in position order. A sequence's
    // rows may span passes: an earlier pass has written their keys and values in every layer before a later
    // pass reads them. Each sequence's block table goes to tables_ once per step; the sequences that want
    // logits get rows of logits_ in pass order, so each pass's logits are one GEMM into consecutive rows.
    void run_passes(const std::vector<SeqStep>& batch) {
        std::vector<Row> rows;
        for (int one = 1; one >= 0; one--)
            for (size_t s = 0; s < batch.size(); s++)
                if ((batch[s].n == 1) == bool(one))
                    for (int t = 0; t < batch[s].n; t++) rows.push_back({int(s), batch[s].pos + t});
        std::vector<int>& tables = tables_host_;
        std::vector<int> table_off(batch.size());
        tables.clear();
        int n_logits = 0;
        for (size_t s = 0; s < batch.size(); s++) {
            table_off[s] = int(tables.size());
            tables.insert(tables.end(), batch[s].blocks, batch[s].blocks + kv_blocks_for(batch[s].pos + batch[s].n));
        }
        for (const Row& r : rows) {
            const SeqStep& q = batch[size_t(r.seq)];
            if (q.want_logits && r.pos == q.pos + q.n - 1) slot_of_seq_[size_t(r.seq)] = n_logits++;
        }
        reserve_logits(n_logits);
        decode_table_.clear();  // tables_ is overwritten
        CUDA_CHECK(cudaMemcpyAsync(tables_, tables.data(), tables.size() * sizeof(int), cudaMemcpyHostToDevice,
                                   h_.stream));
        for (size_t done = 0; done < rows.size(); done += size_t(chunk_)) {
            size_t n = std::min(rows.size() - done, size_t(chunk_));
            run_pass(batch, std::vector<Row>(rows.begin() + long(done), rows.begin() + long(done + n)), table_off);
        }
    }

    // One pass: rows_ gets, per row, its token, position, pool row and table offset, then the pass rows whose
    // logits are wanted; embedding, every layer, then those rows' logits.
    void run_pass(const std::vector<SeqStep>& batch, const std::vector<Row>& rows, const std::vector<int>& table_off) {
        const Config& c = cfg_;
        const int n = int(rows.size()), C = rows_cap_;
        std::vector<int>& h = pass_host_;
        h.assign(size_t(5) * C, 0);
        std::vector<int> want;  // pass rows whose logits are wanted
        int first_slot = -1, n_dec = 0;
        for (int r = 0; r < n; r++) {
            const Row& w = rows[size_t(r)];
            const SeqStep& q = batch[size_t(w.seq)];
            h[size_t(r)] = q.tokens[w.pos - q.pos];
            h[size_t(C + r)] = w.pos;
            h[size_t(2 * C + r)] = int(kv_pool_row(q.blocks, w.pos));
            h[size_t(3 * C + r)] = table_off[size_t(w.seq)];
            if (q.n == 1) n_dec++;
            if (q.want_logits && w.pos == q.pos + q.n - 1) {
                if (want.empty()) first_slot = slot_of_seq_[size_t(w.seq)];
                h[size_t(4 * C) + want.size()] = r;
                want.push_back(r);
            }
        }
        CUDA_CHECK(cudaMemcpyAsync(rows_, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice, h_.stream));
        gpu::embed(w_.token_embd, rows_, X_, n, launch_);
        for (int l = 0; l < c.n_layers; l++) pass_layer(rows, table_off, n_dec, l);
        if (want.size() == 1) {  // one row: the fused matvec (fp32 input, the weights in their own type)
            gpu::rmsnorm_matvec(gpu::mat_rows({&w_.lm_head}), X_ + size_t(want[0]) * c.dim, w_.out_norm.f32(),
                                c.norm_eps, logits_ + size_t(first_slot) * c.vocab_size, launch_);
        } else if (!want.empty()) {  // several: gathered, normalised to bf16, one GEMM (lm_head read once)
            const int* gather = rows_ + 4 * C;
            gpu::rmsnorm<bf16>(X_, w_.out_norm.f32(), Xn_, int(want.size()), c.dim, c.norm_eps, launch_, gather);
            gemm_parts({&w_.lm_head}, Xn_, logits_ + size_t(first_slot) * c.vocab_size, int(want.size()),
                       c.vocab_size, false);
        }
    }

    // One transformer block over the pass's rows: projections as GEMMs, the decode rows' attention in one
    // launch, each prompt chunk's (a run of one sequence's rows) on the tensor cores through its table.
    void pass_layer(const std::vector<Row>& rows, const std::vector<int>& table_off, int n_dec, int l) {
        const Config& c = cfg_;
        const gpu::Launch& L = launch_;
        const Layer& w = w_.layers[size_t(l)];
        const int n = int(rows.size()), C = rows_cap_, D = c.head_dim;
        const int* pos = rows_ + C;
        gpu::rmsnorm<bf16>(X_, w.attn_norm.f32(), Xn_, n, c.dim, c.norm_eps, L);
        gemm_parts({&w.wq, &w.wk, &w.wv}, Xn_, QKV_, n, qkv_dim(), false);
        gpu::qkv_epilogue(QKV_, qkv_layer(l), inv_freq_, pos, rows_ + 2 * C, n, c.n_heads, c.n_kv_heads, D,
                          c.norm_eps, L);
        if (n_dec > 0) {
            gpu::DecodeRows r;
            r.q = QKV_, r.q_stride = qkv_dim(), r.K = k_layer(l), r.V = v_layer(l), r.pos = pos;
            r.tables = tables_, r.table_off = rows_ + 3 * C, r.n_rows = n_dec;
            int parts = std::min(n_parts_, gpu::ceil_div(n_parts_, n_dec));  // n_dec * parts < n_parts + n_dec
            gpu::attention_decode(r, part_o_, part_ml_, A_, c.q_dim(), parts, c.n_heads, c.n_kv_heads, D, L);
        }
        for (int a = n_dec, b; a < n; a = b) {  // runs of one sequence's rows
            for (b = a + 1; b < n && rows[size_t(b)].seq == rows[size_t(a)].seq;) b++;
            const int* table = tables_ + table_off[size_t(rows[size_t(a)].seq)];
            gpu::attention_prefill(QKV_ + size_t(a) * qkv_dim(), k_layer(l), v_layer(l), pos + a, table,
                                   A_ + size_t(a) * c.q_dim(), b - a, c.n_heads, c.n_kv_heads, D, L);
        }
        gemm_parts({&w.wo}, A_, X_, n, c.dim, true);
        gpu::rmsnorm<bf16>(X_, w.ffn_norm.f32(), Xn_, n, c.dim, c.norm_eps, L);
        gemm_parts({&w.w_gate, &w.w_up}, Xn_, GU_, n, 2 * c.ffn_dim, false);
        gpu::swiglu<bf16>(GU_, H_, n, c.ffn_dim, L);
        gemm_parts({&w.w_down}, H_, X_, n, c.dim, true);
    }

    // Y[:, 0 .. sum rows) (row stride ldy) = X @ [W_0; W_1; ...]^T (+ Y when accumulate), on the tensor cores. A
    // run of bf16 matrices that follow one another in memory (weights.bin stacks q, k, v) is one GEMM; a matrix of
    // any other type is first decoded into the bf16 scratch wbf_ (a layer matrix whole, a larger lm_head in slices
    // of rows, in stream order).
    void gemm_parts(std::initializer_list<const Tensor*> parts, const bf16* X, float* Y, int n, int ldy, bool accumulate) {
        std::vector<const Tensor*> p(parts);
        int col = 0;
        for (size_t i = 0, j; i < p.size(); i = j) {
            int rows = p[i]->rows;
            for (j = i + 1; j < p.size() && p[i]->type == DT_BF16 && p[j]->type == DT_BF16 &&
                            p[j]->data == p[j - 1]->data + p[j - 1]->bytes();)
                rows += p[j++]->rows;
            const Tensor& t = *p[i];
            if (t.type == DT_BF16) {
                const bf16* W = reinterpret_cast<const bf16*>(t.data);
                gpu::gemm(h_.cublas, W, X, Y + col, n, rows, t.cols, accumulate, ldy);
            } else {  // decoded in slices of rows that fit wbf_ (a layer matrix in one; lm_head in several)
                int slice = int(std::min<size_t>(wbf_elems_ / size_t(t.cols), size_t(std::min(t.rows, slice_rows_))));
                if (slice < 1) fail("cuda: no decode scratch for a %d x %d matrix", t.rows, t.cols);
                for (int r0 = 0; r0 < t.rows; r0 += slice) {
                    Tensor part = t;
                    part.data = t.row(r0), part.rows = std::min(slice, t.rows - r0);
                    gpu::dequantize_bf16(part, wbf_, launch_);
                    gpu::gemm(h_.cublas, wbf_, X, Y + col + r0, n, part.rows, t.cols, accumulate, ldy);
                }
            }
            col += rows;
        }
    }

    // ---- sampling helpers ----

    // The logits after the logit bias and the penalties (a device copy) when one is on, else the logits themselves.
    // The host lists the ids and values of each step (as the CPU Sampler computes them); one upload, one launch each.
    const float* apply_penalties(const float* logits, const SamplingParams& p, int n_vocab,
                                 const std::vector<int>& tokens, size_t n_prompt) {
        std::vector<int> ids;
        std::vector<float> vals;
        for (const auto& [id, b] : p.logit_bias)
            if (id >= 0 && id < n_vocab) ids.push_back(id), vals.push_back(b);
        const int n_bias = int(ids.size());
        if (p.repetition_penalty != 1.0f && p.repeat_last_n != 0)
            for (int id : distinct_tokens(tokens, repeat_window_begin(tokens.size(), p.repeat_last_n), n_vocab))
                ids.push_back(id), vals.push_back(0);
        const int n_rep = int(ids.size()) - n_bias;
        for (const auto& [id, v] : openai_penalties(tokens, std::min(n_prompt, tokens.size()), n_vocab,
                                                    p.presence_penalty, p.frequency_penalty))
            ids.push_back(id), vals.push_back(v);
        const int n_sub = int(ids.size()) - n_bias - n_rep;
        if (ids.empty()) return logits;
        CUDA_CHECK(
            cudaMemcpyAsync(work_, logits, size_t(n_vocab) * sizeof(float), cudaMemcpyDeviceToDevice, h_.stream));
        CUDA_CHECK(cudaMemcpyAsync(pen_ids_, ids.data(), ids.size() * sizeof(int), cudaMemcpyHostToDevice, h_.stream));
        CUDA_CHECK(
            cudaMemcpyAsync(pen_vals_, vals.data(), vals.size() * sizeof(float), cudaMemcpyHostToDevice, h_.stream));
        gpu::apply_penalty(work_, pen_ids_, pen_vals_, n_bias, gpu::PEN_BIAS, 1, launch_);
        gpu::apply_penalty(work_, pen_ids_ + n_bias, pen_vals_ + n_bias, n_rep, gpu::PEN_REPEAT,
                           p.repetition_penalty, launch_);
        gpu::apply_penalty(work_, pen_ids_ + n_bias + n_rep, pen_vals_ + n_bias + n_rep, n_sub, gpu::PEN_SUBTRACT, 1,
                           launch_);
        synchronize();  // the copies read from ids and vals, locals
        return work_;
    }

    // The chosen id, choice_[which] (0: the argmax, 1: the sampled id), after checking the argmax's verdict on the
    // logits; with logprobs on, those of the model's logits (before the penalties) are computed on the device and
    // only the few numbers asked for cross to the host, into s.logprobs.
    int finish_sample(const float* logits, Sampler& s, int n_vocab, int which) {
        const int top_n = std::min(s.params.logprobs, n_vocab);
        if (top_n >= 0) gpu::logprobs(logits, n_vocab, choice_ + which, top_n, lp_ids_, lp_vals_, launch_);
        int c[2] = {0, 0};
        int top_ids[MAX_TOP_LOGPROBS];
        float vals[1 + MAX_TOP_LOGPROBS];
        CUDA_CHECK(cudaMemcpyAsync(c, choice_, sizeof c, cudaMemcpyDeviceToHost, h_.stream));
        if (top_n >= 0) {
            CUDA_CHECK(cudaMemcpyAsync(vals, lp_vals_, size_t(1 + top_n) * sizeof(float), cudaMemcpyDeviceToHost,
                                       h_.stream));
            if (top_n > 0)
                CUDA_CHECK(cudaMemcpyAsync(top_ids, lp_ids_, size_t(top_n) * sizeof(int), cudaMemcpyDeviceToHost,
                                           h_.stream));
        }
        synchronize();
        if (c[0] == gpu::ARGMAX_NOT_FINITE) fail("sampler: the model produced a non-finite logit (NaN or +inf)");
        if (c[0] == gpu::ARGMAX_ALL_NEG_INF) fail("sampler: every logit is -inf");
        if (top_n >= 0) {
            s.logprobs.chosen = {c[which], vals[0]};
            s.logprobs.top.clear();
            for (int k = 0; k < top_n; k++) s.logprobs.top.push_back({top_ids[k], vals[1 + k]});
        }
        return c[which];
    }
};

// ============================================================================
// Engine choice: the GPU when there is one, else the CPU reference (the front ends' one call)
// ============================================================================

// Why the GPU engine cannot run here, or "" when it can: no device, or one it cannot use (see device_unsupported).
inline std::string gpu_unavailable() { return gpu::device_available() ? gpu::device_unsupported() : "no CUDA device found"; }

// The GPU engine when it can run here and force_cpu is false, else the CPU engine (n_threads: 0 = all cores);
// kv_blocks: the KV pool's size in blocks (0: one context's worth).
inline std::unique_ptr<Engine> make_engine(const Model& m, int context_size, bool force_cpu = false, int n_threads = 0,
                                           int kv_blocks = 0) {
    if (!force_cpu && gpu_unavailable().empty()) return std::make_unique<GpuEngine>(m, context_size, kv_blocks);
    return std::make_unique<CpuEngine>(m, context_size, n_threads, kv_blocks);
}

// ============================================================================
// Test oracles: the simplest correct kernel of an op, to check the engine's kernels against (test/test_gpu.cu)
// and to start a faster version from (dev/).
// ============================================================================
namespace gpu {

// y[r] = sum_c W[r, c] * x[c], one thread per row, no tricks   grid (rows / 128), block 128
static __global__ void matvec_ref_kernel(const bf16* W, const float* x, float* y, int rows, int cols) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float s = 0;
    for (int c = 0; c < cols; c++) s += bf2f(W[size_t(r) * cols + c]) * x[c];
    y[r] = s;
}
// W: (rows, cols) bf16, x: (cols) fp32, y: (rows) fp32.
inline void matvec_ref(const bf16* W, const float* x, float* y, int rows, int cols, const Launch& l) {
    if (rows < 1 || cols < 1) fail("matvec_ref: bad shape %d x %d", rows, cols);
    matvec_ref_kernel<<<ceil_div(rows, 128), 128, 0, l.stream>>>(W, x, y, rows, cols);
    CUDA_CHECK(cudaGetLastError());
}

// One query head against the whole cache, scores kept in shared memory:
// out[h] = sum_t softmax_t(q[h] . K[t, kvh] / sqrt(D)) V[t, kvh]   grid (n_heads), block 128, smem T floats
static __global__ void attention_decode_ref_kernel(const float* q, const bf16* K, const bf16* V, float* out, int T,
                                                   int n_heads, int n_kv_heads, int D) {
    extern __shared__ float score[];  // (T)
    int h = blockIdx.x, kvh = h / (n_heads / n_kv_heads), kv_dim = n_kv_heads * D;
    const float* qh = q + size_t(h) * D;
    float scale = rsqrtf(float(D));
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
        const bf16* k = K + size_t(t) * kv_dim + size_t(kvh) * D;
        float s = 0;
        for (int d = 0; d < D; d++) s += qh[d] * bf2f(k[d]);
        score[t] = s * scale;
    }
    __syncthreads();
    float m = -INFINITY;
    for (int t = threadIdx.x; t < T; t += blockDim.x) m = fmaxf(m, score[t]);
    m = block_max(m);
    float z = 0;
    for (int t = threadIdx.x; t < T; t += blockDim.x) z += expf(score[t] - m);
    z = block_sum(z);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0;
        for (int t = 0; t < T; t++) o += expf(score[t] - m) * bf2f(V[size_t(t) * kv_dim + size_t(kvh) * D + d]);
        out[size_t(h) * D + d] = o / z;
    }
}
// q: (n_heads, D) fp32; K, V: (>= T, n_kv_heads * D) bf16, one layer of the cache; out: (n_heads, D) fp32.
inline void attention_decode_ref(const float* q, const bf16* K, const bf16* V, float* out, int T, int n_heads,
                                 int n_kv_heads, int D, const Launch& l) {
    if (T < 1) fail("attention_decode_ref: no cached tokens");
    if (n_heads % n_kv_heads != 0) fail("attention: %d heads are not a multiple of %d kv heads", n_heads, n_kv_heads);
    size_t smem = size_t(T) * sizeof(float);
    allow_smem(attention_decode_ref_kernel, smem, l, "attention_decode_ref");
    attention_decode_ref_kernel<<<n_heads, 128, smem, l.stream>>>(q, K, V, out, T, n_heads, n_kv_heads, D);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace gpu
}  // namespace qwen
