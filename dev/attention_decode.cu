// Decode attention: one query per head against T cached keys/values (bf16), GQA.
//   v1  qwen::gpu::attention_decode_ref: one block per head, scores in shared memory (few blocks: at short
//       contexts most of the GPU idles, at long ones each block walks the whole cache alone)
//   v2  qwen::gpu::attention_decode: the context split into chunks computed in parallel (flash-decoding),
//       then a log-sum-exp reduce
//   v3  as v2, but one block per (kv head, chunk) scores all the query heads of its GQA group, so each K/V
//       row is read once instead of once per query head (7x less traffic for Qwen2-7B). Not in the engine yet.
// usage: ./dev/bin/attention_decode [version]   (Qwen2-7B: 28 heads, 4 kv heads, head_dim 128; one layer)
#include "common.cuh"

using qwen::bf16;
using namespace qwen::gpu;

constexpr int MAX_GROUP = 8;  // query heads per kv head handled by v3

// Flash-decoding over a GQA group: block (kvh, part) scores the chunk's tokens against the G = n_heads /
// n_kv_heads queries of kv head kvh (one token per thread, its K row read once), then accumulates the G
// outputs; partial results in the same layout as qwen::gpu::attention_decode_kernel, so
// attention_reduce_kernel combines them.   grid (n_kv_heads, n_parts), block ATT_THREADS, smem G*D floats
static __global__ void __launch_bounds__(ATT_THREADS)
    attention_group_kernel(const float* q, const bf16* K, const bf16* V, const int* pos, float* part_o, float* part_ml,
                           int n_heads, int n_kv_heads, int D) {
    extern __shared__ float4 smem4[];
    float* qs = reinterpret_cast<float*>(smem4);      // (G, D) the group's queries, pre-scaled by 1/sqrt(D)
    __shared__ float p_tile[MAX_GROUP][ATT_THREADS];  // exp(s - m) per head for the current tile
    int kvh = blockIdx.x, part = blockIdx.y, n_parts = gridDim.y, tid = threadIdx.x;
    int G = n_heads / n_kv_heads, kv_dim = n_kv_heads * D;
    int T = *pos + 1, chunk = ceil_div(T, n_parts);
    int t_begin = part * chunk, t_end = min(T, t_begin + chunk);
    for (int e = tid; e < G * D; e += ATT_THREADS) qs[e] = q[size_t(kvh) * G * D + e] * rsqrtf(float(D));
    __syncthreads();
    float m[MAX_GROUP], lsum[MAX_GROUP], acc[MAX_GROUP * ATT_MAX_D / ATT_THREADS] = {};
#pragma unroll
    for (int g = 0; g < MAX_GROUP; g++) m[g] = -INFINITY, lsum[g] = 0;
    for (int t0 = t_begin; t0 < t_end; t0 += ATT_THREADS) {
        int t = t0 + tid;
        float s[MAX_GROUP];
#pragma unroll
        for (int g = 0; g < MAX_GROUP; g++) s[g] = t < t_end && g < G ? 0.0f : -INFINITY;
        if (t < t_end) {
            const uint4* k4 = reinterpret_cast<const uint4*>(K + size_t(t) * kv_dim + size_t(kvh) * D);
            for (int j = 0; j < D / 8; j++) {
                uint4 k = k4[j];
#pragma unroll
                for (int g = 0; g < MAX_GROUP; g++) {
                    if (g >= G) break;
                    const float4* q4 = reinterpret_cast<const float4*>(qs + g * D);
                    s[g] += dot8(k, q4[2 * j], q4[2 * j + 1]);
                }
            }
        }
        float corr[MAX_GROUP];
#pragma unroll
        for (int g = 0; g < MAX_GROUP; g++) {
            if (g >= G) break;  // uniform: every thread has the same G
            float m_new = fmaxf(m[g], block_max(s[g]));
            float e = t < t_end ? expf(s[g] - m_new) : 0.0f;
            p_tile[g][tid] = e;
            corr[g] = expf(m[g] - m_new);
            lsum[g] = lsum[g] * corr[g] + block_sum(e);  // its barriers publish p_tile[g]
            m[g] = m_new;
        }
        int n_t = min(ATT_THREADS, t_end - t0);
        // outputs (g, d) are spread over the threads: output o = tid + k * ATT_THREADS
#pragma unroll
        for (int k = 0; k < MAX_GROUP * ATT_MAX_D / ATT_THREADS; k++) {
            int o = tid + k * ATT_THREADS, g = o / D, d = o % D;
            if (g >= G) break;
            float c = 1.0f;
#pragma unroll
            for (int gg = 0; gg < MAX_GROUP; gg++)
                if (gg == g) c = corr[gg];  // constant indices keep corr in registers
            float a = acc[k] * c;
#pragma unroll 8
            for (int j = 0; j < n_t; j++) a += p_tile[g][j] * bf2f(V[size_t(t0 + j) * kv_dim + size_t(kvh) * D + d]);
            acc[k] = a;
        }
        __syncthreads();  // p_tile is rewritten by the next tile
    }
#pragma unroll
    for (int k = 0; k < MAX_GROUP * ATT_MAX_D / ATT_THREADS; k++) {
        int o = tid + k * ATT_THREADS, g = o / D, d = o % D;
        if (g >= G) break;
        part_o[(size_t(kvh * G + g) * n_parts + part) * D + d] = acc[k];
    }
    if (tid < G) {
        float mm = 0, ll = 0;
#pragma unroll
        for (int gg = 0; gg < MAX_GROUP; gg++)
            if (gg == tid) mm = m[gg], ll = lsum[gg];
        size_t slot = size_t(kvh * G + tid) * n_parts + part;
        part_ml[2 * slot] = mm;
        part_ml[2 * slot + 1] = ll;
    }
}

static void attention_group(const float* q, const bf16* K, const bf16* V, const int* pos, float* part_o, float* part_ml,
                            float* out, int n_parts, int n_heads, int n_kv_heads, int D, const Launch& l) {
    int G = n_heads / n_kv_heads;
    if (G > MAX_GROUP || G * D > MAX_GROUP * ATT_MAX_D || D % 8) qwen::fail("attention_group: unsupported shape");
    attention_group_kernel<<<dim3(n_kv_heads, n_parts), ATT_THREADS, G * D * sizeof(float), l.stream>>>(
        q, K, V, pos, part_o, part_ml, n_heads, n_kv_heads, D);
    CUDA_CHECK(cudaGetLastError());
    attention_reduce_kernel<<<n_heads, 256, 0, l.stream>>>(part_o, part_ml, out, n_parts, D);
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
        int parts = attention_parts(H, T, l), parts_group = attention_parts(KV, T, l);
        size_t max_parts = size_t(std::max(parts, parts_group));  // the scratch serves either
        float *out = nullptr, *po = nullptr, *pml = nullptr;
        CUDA_CHECK(cudaMalloc(&out, H * D * sizeof(float)));
        CUDA_CHECK(cudaMalloc(&po, H * max_parts * D * sizeof(float)));
        CUDA_CHECK(cudaMalloc(&pml, H * max_parts * 2 * sizeof(float)));
        auto run = [&](int) {
            if (v == 1) attention_decode_ref(q, K, V, out, T, H, KV, D, l);
            if (v == 2) attention_decode(q, K, V, pos, po, pml, out, parts, H, KV, D, l);
            if (v == 3) attention_group(q, K, V, pos, po, pml, out, parts_group, H, KV, D, l);
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
    }
    return 0;
}

int main(int argc, char** argv) { return bench::run_main(body, argc, argv); }
