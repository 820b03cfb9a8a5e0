// Decode attention: one query per head against T cached keys/values (bf16), GQA.
//   v1  qwen::gpu::attention_decode_ref: one block per head, scores in shared memory (few blocks: at short
//       contexts most of the GPU idles, at long ones each block walks the whole cache alone)
//   v2  the context split into chunks computed in parallel (flash-decoding), one block per (query head, chunk),
//       then the engine's log-sum-exp reduce; each K/V row is read once per query head
//   v3  qwen::gpu::attention_decode, the engine's: one block per (kv head, chunk) scores all the query heads of
//       its GQA group (up to 8; larger groups take several blocks), so each K/V row is read once instead of once
//       per query head (7x less traffic for Qwen2-7B); one warp per head keeps the online softmax (2 barriers
//       per tile; the first version reduced over the block per head: 6 barriers per head, 38 us at T = 128 on
//       an H200), chunks of at least one full tile, so a short context runs in few blocks and a short reduce
// usage: ./dev/bin/attention_decode [version]   (Qwen2-7B: 28 heads, 4 kv heads, head_dim 128; one layer)
#include "common.cuh"

using qwen::bf16;
using namespace qwen::gpu;

// Flash-decoding, part 1. The T = *pos + 1 cached tokens are cut into chunks of attention_chunk(T, n_parts)
// tokens (the engine's rule; blocks past the context exit); block (h, part)
// runs an online softmax over its chunk for query head h and writes the unnormalised partial result:
//   m = max_t s_t,  l = sum_t exp(s_t - m),  o[d] = sum_t exp(s_t - m) V[t, d],   s_t = q . K[t] / sqrt(D)
// Tiles of ATT_THREADS tokens: each thread scores one token (16-byte K loads), then each thread accumulates
// its output dimensions over the tile (coalesced V rows). The chunk length comes from device memory, so the
// launch shape is the same at every position (a CUDA graph can replay it).
// grid (n_heads, n_parts), block ATT_THREADS, smem D floats
static __global__ void __launch_bounds__(ATT_THREADS)
    attention_decode_v2_kernel(const float* q, const bf16* K, const bf16* V, const int* pos, float* part_o, float* part_ml,
                            int n_heads, int n_kv_heads, int D) {
    extern __shared__ float4 v2_smem4[];
    float* qs = reinterpret_cast<float*>(v2_smem4);  // (D) the query, pre-scaled by 1/sqrt(D)
    __shared__ float p_tile[ATT_THREADS];             // exp(s_t - m) for the current tile
    int h = blockIdx.x, part = blockIdx.y, n_parts = gridDim.y, tid = threadIdx.x;
    int kv_dim = n_kv_heads * D, kv_off = (h / (n_heads / n_kv_heads)) * D;
    int T = *pos + 1, chunk = attention_chunk(T, n_parts);
    int t_begin = part * chunk, t_end = min(T, t_begin + chunk);
    if (t_begin >= T) return;
    float scale = rsqrtf(float(D));
    for (int d = tid; d < D; d += ATT_THREADS) qs[d] = q[size_t(h) * D + d] * scale;
    __syncthreads();
    float m = -INFINITY, lsum = 0, acc[ATT_MAX_D / ATT_THREADS] = {};
    for (int t0 = t_begin; t0 < t_end; t0 += ATT_THREADS) {
        int t = t0 + tid;
        float s = -INFINITY;
        if (t < t_end) {
            const uint4* k4 = reinterpret_cast<const uint4*>(K + size_t(t) * kv_dim + kv_off);
            const float4* q4 = reinterpret_cast<const float4*>(qs);
            s = 0;
            for (int j = 0; j < D / 8; j++) s += dot8<qwen::DT_BF16>(k4[j], q4[2 * j], q4[2 * j + 1]);
        }
        float m_new = fmaxf(m, block_max(s));  // finite: the tile holds at least one token
        float e = t < t_end ? expf(s - m_new) : 0.0f;
        p_tile[tid] = e;
        float corr = expf(m - m_new);       // rescales what was summed against the old max (0 on the first tile)
        lsum = lsum * corr + block_sum(e);  // block_sum's barriers also publish p_tile
        m = m_new;
        int n_t = min(ATT_THREADS, t_end - t0);
#pragma unroll
        for (int k = 0; k < ATT_MAX_D / ATT_THREADS; k++) {
            int d = tid + k * ATT_THREADS;
            if (d >= D) continue;
            float o = acc[k] * corr;
#pragma unroll 8
            for (int j = 0; j < n_t; j++) o += p_tile[j] * bf2f(V[size_t(t0 + j) * kv_dim + kv_off + d]);
            acc[k] = o;
        }
        __syncthreads();  // p_tile is rewritten by the next tile
    }
    size_t slot = size_t(h) * n_parts + part;
#pragma unroll
    for (int k = 0; k < ATT_MAX_D / ATT_THREADS; k++) {
        int d = tid + k * ATT_THREADS;
        if (d < D) part_o[slot * D + d] = acc[k];
    }
    if (tid == 0) {
        part_ml[2 * slot] = m;
        part_ml[2 * slot + 1] = lsum;
    }
}

static void attention_decode_v2(const float* q, const bf16* K, const bf16* V, const int* pos, float* part_o,
                                float* part_ml, float* out, int n_parts, int n_heads, int n_kv_heads, int D,
                                const Launch& l) {
    attention_decode_v2_kernel<<<dim3(n_heads, n_parts), ATT_THREADS, D * sizeof(float), l.stream>>>(
        q, K, V, pos, part_o, part_ml, n_heads, n_kv_heads, D);
    CUDA_CHECK(cudaGetLastError());
    attention_reduce_kernel<float><<<dim3(n_heads, 1), 256, 0, l.stream>>>(part_o, part_ml, pos, out, 0, n_parts, D);
    CUDA_CHECK(cudaGetLastError());
}

static int body(int argc, char** argv) {
    int v = bench::version_arg(argc, argv, 3);
    Launch l = make_launch(nullptr);
    const int H = 28, KV = 4, D = 128, kv_dim = KV * D;
    double ceiling = bench::copy_gb_s();
    printf("attention_decode v%d; device copy bandwidth %.0f GB/s\n", v, ceiling);
    printf("%7s %9s %9s %8s %10s\n", "T", "KV MB", "us", "GB/s", "nmse");
    for (int T : {128, 1024, 4096, 16384}) {
        size_t n = size_t(T) * kv_dim, bytes = 2 * n * sizeof(bf16);
        bf16* K = bench::random_bf16(n, 1, 1.0f, l);
        bf16* V = bench::random_bf16(n, 2, 1.0f, l);
        std::vector<float> hq = bench::random_f32(size_t(H) * D, 3);
        float* q = bench::to_device(hq);
        int* pos = bench::to_device(std::vector<int>{T - 1});
        std::vector<int> identity(size_t(qwen::kv_blocks_for(T)));  // the engine reads K/V through a block table
        for (size_t b = 0; b < identity.size(); b++) identity[b] = int(b);
        DecodeRows rows;
        rows.q = q, rows.K = K, rows.V = V, rows.pos = pos;
        rows.tables = bench::to_device(identity), rows.table_off = bench::to_device(std::vector<int>{0});
        int parts = std::max(1, std::min(ceil_div(2 * l.sm_count, H), T)), parts_group = attention_parts(H, KV, T, l);
        size_t max_parts = size_t(std::max(parts, parts_group));  // the scratch serves either
        float *out = nullptr, *po = nullptr, *pml = nullptr;
        CUDA_CHECK(cudaMalloc(&out, H * D * sizeof(float)));
        CUDA_CHECK(cudaMalloc(&po, H * max_parts * D * sizeof(float)));
        CUDA_CHECK(cudaMalloc(&pml, H * max_parts * 2 * sizeof(float)));
        auto run = [&](int) {
            if (v == 1) attention_decode_ref(q, K, V, out, T, H, KV, D, l);
            if (v == 2) attention_decode_v2(q, K, V, pos, po, pml, out, parts, H, KV, D, l);
            if (v == 3) attention_decode(rows, po, pml, out, 0, parts_group, H, KV, D, l);
        };
        run(0);
        std::vector<bf16> hK = bench::to_host(K, n), hV = bench::to_host(V, n);
        std::vector<double> ref(size_t(H) * D, 0.0);
        for (int h = 0; h < H; h++) {
            int kvh = h / (H / KV);
            std::vector<double> s(T);
            double m = -INFINITY, z = 0;
            for (int t = 0; t < T; t++) {
                double a = 0;
                for (int d = 0; d < D; d++)
                    a += hq[size_t(h * D + d)] * qwen::bf16_to_f32(hK[size_t(t) * kv_dim + kvh * D + d]);
                s[size_t(t)] = a / std::sqrt(double(D));
                m = std::max(m, s[size_t(t)]);
            }
            for (double& e : s) z += (e = std::exp(e - m));
            for (int t = 0; t < T; t++)
                for (int d = 0; d < D; d++)
                    ref[size_t(h * D + d)] +=
                        s[size_t(t)] / z * qwen::bf16_to_f32(hV[size_t(t) * kv_dim + kvh * D + d]);
        }
        double err = bench::nmse(bench::to_host(out, size_t(H) * D), ref);
        float ms = bench::median_ms(run);  // K/V of one layer fit in L2 up to ~T = 20k: these are L2-warm numbers
        printf("%7d %9.2f %9.1f %8.0f %10.2e%s\n", T, bytes / 1e6, ms * 1e3, bytes / (ms * 1e-3) / 1e9, err,
               err <= 1e-8 ? "" : "  FAILED");
        cudaFree(K), cudaFree(V), cudaFree(q), cudaFree(pos), cudaFree(out), cudaFree(po), cudaFree(pml);
        cudaFree(const_cast<int*>(rows.tables)), cudaFree(const_cast<int*>(rows.table_off));
    }
    return 0;
}

int main(int argc, char** argv) { return bench::run_main(body, argc, argv); }
