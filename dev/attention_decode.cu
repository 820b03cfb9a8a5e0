// Decode attention: one query per head against T cached keys/values (bf16), GQA.
//   v1  qwen::gpu::attention_decode_ref: one block per head, scores in shared memory (few blocks: at short
//       contexts most of the GPU idles, at long ones each block walks the whole cache alone)
//   v2  qwen::gpu::attention_decode, grouped = false: the context split into chunks computed in parallel
//       (flash-decoding), one block per (query head, chunk), then a log-sum-exp reduce
//   v3  qwen::gpu::attention_decode, grouped = true: one block per (kv head, chunk) scores all the query heads
//       of its GQA group, so each K/V row is read once instead of once per query head (7x less traffic for
//       Qwen2-7B). The engine's version when the group has at most ATT_MAX_GROUP = 8 query heads.
// usage: ./dev/bin/attention_decode [version]   (Qwen2-7B: 28 heads, 4 kv heads, head_dim 128; one layer)
#include "common.cuh"

using qwen::bf16;
using namespace qwen::gpu;

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
            if (v == 2) attention_decode(q, K, V, pos, po, pml, out, parts, H, KV, D, /*grouped=*/false, l);
            if (v == 3) attention_decode(q, K, V, pos, po, pml, out, parts_group, H, KV, D, /*grouped=*/true, l);
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
