// attention_prefill_tc: the causal prefill attention of qwen::gpu::attention_prefill with both products on tensor
// cores (wmma, bf16 in, fp32 accumulation). A candidate for the engine, kept here until it is measured against
// the engine's CUDA-core kernel on a GPU (./dev/bin/attention_prefill 1 vs 2); the tests run it on every build
// (test/test_gpu.cu, on the emulated device without a GPU). To promote it: move this file's body into the
// prefill section of qwen.cuh and call attention_prefill_tc from GpuEngine::prefill_layer.
#pragma once
#include "../qwen.cuh"

#include <mma.h>

namespace qwen {
namespace gpu {

constexpr int TC_BQ = 64;  // queries per block: 4 warps, 16 query rows each
constexpr int TC_BK = 64;  // keys per tile

// Shared-memory layout of attention_prefill_tc_kernel<D>: byte offsets of its arrays, each 32-byte aligned
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

// The causal prefill attention of attention_prefill_kernel with both products on tensor cores. Block (h, qb)
// owns queries qb*TC_BQ .. +TC_BQ of head h; warp w owns 16 of those rows and, per key tile of TC_BK keys:
//   S = Q K^T (wmma)  ->  per row: s = S / sqrt(D) masked causally, m' = max(m, max s), p = exp(s - m'),
//   l = l exp(m - m') + sum p, O = O exp(m - m')  ->  O += P V (wmma, P rounded to bf16)
// and at the end out = O / l. Q is rounded to bf16 for the tensor cores (the model's attention runs in bf16).
// Two lanes share a row in the softmax (each half the keys and half of O); m and l stay in their registers.
// O lives in shared memory because a wmma accumulator's element-to-row map is unspecified, so it cannot be
// rescaled per row in registers.   grid (n_heads, ceil(n / TC_BQ)), block 128, smem TcSmem<D>::BYTES
template <int D>
static __global__ void __launch_bounds__(128)
    attention_prefill_tc_kernel(const float* qkv, const bf16* K, const bf16* V, const int* pos, bf16* out, int n,
                                int n_heads, int n_kv_heads) {
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
            uint4 zero = make_uint4(0, 0, 0, 0);
            *reinterpret_cast<uint4*>(Ks + r * L::LD + 8 * c) =
                ok ? reinterpret_cast<const uint4*>(K + size_t(k0 + r) * kv_dim + kv_off)[c] : zero;
            *reinterpret_cast<uint4*>(Vs + r * L::LD + 8 * c) =
                ok ? reinterpret_cast<const uint4*>(V + size_t(k0 + r) * kv_dim + kv_off)[c] : zero;
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

// Falls back to the CUDA-core kernel where a block cannot have TcSmem<D>::BYTES of shared memory (the opt-in
// is 227 KB on Hopper, 163 KB on the A100, 99 KB on sm_86 / sm_89 GPUs).
template <int D>
void attention_prefill_tc_launch(const float* qkv, const bf16* K, const bf16* V, const int* pos, bf16* out, int n,
                                 int n_heads, int n_kv_heads, const Launch& l) {
    if (TcSmem<D>::BYTES > l.smem_optin)
        return attention_prefill_launch<D>(qkv, K, V, pos, out, n, n_heads, n_kv_heads, l);
    allow_smem(attention_prefill_tc_kernel<D>, TcSmem<D>::BYTES, l, "attention_prefill_tc");
    attention_prefill_tc_kernel<D><<<dim3(n_heads, ceil_div(n, TC_BQ)), 128, TcSmem<D>::BYTES, l.stream>>>(
        qkv, K, V, pos, out, n, n_heads, n_kv_heads);
    CUDA_CHECK(cudaGetLastError());
}

// qkv: (n, q_dim + 2*kv_dim) fp32 with q already rotated (the q columns are read); K, V: (context, kv_dim)
// bf16 of one layer holding rows 0 .. *pos + n - 1; out: (n, q_dim) bf16 (the input of the wo GEMM).
// Same contract as qwen::gpu::attention_prefill (its CUDA-core twin, the engine's today).
inline void attention_prefill_tc(const float* qkv, const bf16* K, const bf16* V, const int* pos, bf16* out, int n,
                                 int n_heads, int n_kv_heads, int D, const Launch& l) {
    check_prefill_shape(n, n_heads, n_kv_heads, "attention_prefill_tc");
    with_head_dim(D, "attention_prefill_tc", [&](auto d) {
        attention_prefill_tc_launch<decltype(d)::value>(qkv, K, V, pos, out, n, n_heads, n_kv_heads, l);
    });
}

}  // namespace gpu
}  // namespace qwen
