// attention_prefill v1: the causal prefill attention on CUDA cores in fp32, the engine's until measured on an
// H200 (dev/bin/attention_prefill 1 vs 2: 4.4 ms vs 0.81 ms per Qwen2-7B layer at 2048 tokens). Kept as the earlier
// version of qwen::gpu::attention_prefill; test/test_gpu.cu checks both against the same reference.
#pragma once
#include "../qwen.cuh"

namespace qwen {
namespace gpu {

constexpr int PF_BQ = 32;  // queries per block
constexpr int PF_BK = 32;  // keys per tile

// Causal attention for n queries at positions *pos + i against cache rows 0 .. *pos + i (the chunk's own keys
// were written by qkv_epilogue first). Block (h, qb) owns queries qb*PF_BQ .. +PF_BQ of head h; 4 threads
// per query row, each holding D/4 output dimensions in registers. Per key tile: S = Q K^T / sqrt(D) with the
// causal mask, online-softmax update of (m, l, o) per row, o += P V.
// grid (n_heads, ceil(n / PF_BQ)), block 128, smem PF_BQ*(D+1) floats + 2*PF_BK*D bf16 + PF_BQ*PF_BK floats
template <int D>
static __global__ void __launch_bounds__(128)
    attention_prefill_v1_kernel(const float* qkv, const bf16* K, const bf16* V, const int* pos, bf16* out, int n,
                             int n_heads, int n_kv_heads) {
    extern __shared__ float4 pf_smem4[];
    constexpr int QS = D + 1;                              // padded row stride: no bank conflicts
    float* Qs = reinterpret_cast<float*>(pf_smem4);        // (PF_BQ, QS) queries, pre-scaled
    bf16* Ks = reinterpret_cast<bf16*>(Qs + PF_BQ * QS);   // (PF_BK, D) 16-byte aligned: PF_BQ % 4 == 0
    bf16* Vs = Ks + PF_BK * D;                             // (PF_BK, D)
    float* Ps = reinterpret_cast<float*>(Vs + PF_BK * D);  // (PF_BQ, PF_BK) probabilities
    int h = blockIdx.x, q0 = blockIdx.y * PF_BQ, tid = threadIdx.x;
    int row = tid / 4, sub = tid % 4;  // this thread's query row and its quarter of the keys / dimensions
    int q_dim = n_heads * D, kv_dim = n_kv_heads * D, stride = q_dim + 2 * kv_dim;
    int kv_off = (h / (n_heads / n_kv_heads)) * D, p0 = *pos;
    float scale = rsqrtf(float(D));
    for (int e = tid; e < PF_BQ * D; e += 128) {
        int r = e / D, d = e % D;
        Qs[r * QS + d] = q0 + r < n ? qkv[size_t(q0 + r) * stride + h * D + d] * scale : 0.0f;
    }
    int q_pos = p0 + q0 + row;             // this row's position (rows past n are computed, not stored)
    int kv_end = p0 + min(n, q0 + PF_BQ);  // keys needed by the block's last query
    float m = -INFINITY, lsum = 0, o[D / 4];
#pragma unroll
    for (int j = 0; j < D / 4; j++) o[j] = 0;
    for (int k0 = 0; k0 < kv_end; k0 += PF_BK) {
        __syncthreads();  // previous tile fully used (and Qs written, on the first pass)
        for (int e = tid; e < PF_BK * D / 8; e += 128) {  // 16-byte copies of the K and V tiles
            int r = e / (D / 8), c = e % (D / 8);
            uint4 zero = make_uint4(0, 0, 0, 0);
            bool ok = k0 + r < kv_end;
            reinterpret_cast<uint4*>(Ks)[e] =
                ok ? reinterpret_cast<const uint4*>(K + size_t(k0 + r) * kv_dim + kv_off)[c] : zero;
            reinterpret_cast<uint4*>(Vs)[e] =
                ok ? reinterpret_cast<const uint4*>(V + size_t(k0 + r) * kv_dim + kv_off)[c] : zero;
        }
        __syncthreads();
        float s[PF_BK / 4], tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < PF_BK / 4; j++) {
            int key = sub + 4 * j;
            float acc = 0;
#pragma unroll 8
            for (int d = 0; d < D; d++) acc += Qs[row * QS + d] * bf2f(Ks[key * D + d]);
            s[j] = k0 + key <= q_pos ? acc : -INFINITY;  // causal mask (also hides keys past kv_end)
            tile_max = fmaxf(tile_max, s[j]);
        }
        // the 4 threads of a row are adjacent lanes: reduce across them with xor 1, 2
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        float m_new = fmaxf(m, tile_max);
        float corr = m_new == -INFINITY ? 1.0f : expf(m - m_new);
        float psum = 0;
#pragma unroll
        for (int j = 0; j < PF_BK / 4; j++) {
            float e = s[j] == -INFINITY ? 0.0f : expf(s[j] - m_new);
            Ps[row * PF_BK + sub + 4 * j] = e;
            psum += e;
        }
        psum += __shfl_xor_sync(0xffffffffu, psum, 1);
        psum += __shfl_xor_sync(0xffffffffu, psum, 2);
        lsum = lsum * corr + psum;
        m = m_new;
        __syncwarp();  // a row's probabilities come from its own warp
#pragma unroll
        for (int j = 0; j < D / 4; j++) {
            float acc = o[j] * corr;
            for (int key = 0; key < PF_BK; key++) acc += Ps[row * PF_BK + key] * bf2f(Vs[key * D + sub + 4 * j]);
            o[j] = acc;
        }
    }
    if (q0 + row >= n) return;
    bf16* dst = out + size_t(q0 + row) * q_dim + h * D;
#pragma unroll
    for (int j = 0; j < D / 4; j++) dst[sub + 4 * j] = f2bf(o[j] / lsum);
}

template <int D>
void attention_prefill_v1_launch(const float* qkv, const bf16* K, const bf16* V, const int* pos, bf16* out, int n,
                                 int n_heads, int n_kv_heads, const Launch& l) {
    size_t smem = PF_BQ * (D + 1) * sizeof(float) + 2 * PF_BK * D * sizeof(bf16) + PF_BQ * PF_BK * sizeof(float);
    allow_smem(attention_prefill_v1_kernel<D>, smem, l, "attention_prefill_v1");
    attention_prefill_v1_kernel<D>
        <<<dim3(n_heads, ceil_div(n, PF_BQ)), 128, smem, l.stream>>>(qkv, K, V, pos, out, n, n_heads, n_kv_heads);
    CUDA_CHECK(cudaGetLastError());
}

// Same contract as qwen::gpu::attention_prefill.
inline void attention_prefill_v1(const float* qkv, const bf16* K, const bf16* V, const int* pos, bf16* out, int n,
                                 int n_heads, int n_kv_heads, int D, const Launch& l) {
    check_prefill_shape(n, n_heads, n_kv_heads, "attention_prefill_v1");
    with_head_dim(D, "attention_prefill_v1", [&](auto d) {
        attention_prefill_v1_launch<decltype(d)::value>(qkv, K, V, pos, out, n, n_heads, n_kv_heads, l);
    });
}

}  // namespace gpu
}  // namespace qwen
