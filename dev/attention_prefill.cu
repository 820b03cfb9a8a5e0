// Causal prefill attention: n prompt queries per head against the chunk's own n cached keys/values (bf16), GQA.
// Query i (at position i) sees keys 0 .. i: 2 * 2 * n_heads * D * n(n+1)/2 flops (Q K^T and P V, causal half),
// hundreds of flops per byte of q, K, V and output, so the ceiling is the multiply-add rate, not the bandwidth.
//   v1  attention_prefill_v1 (dev/attention_prefill_v1.cuh): 32 queries per block, 4 threads per query row, fp32
//       on CUDA cores (two shared-memory loads per multiply-add)
//   v2  qwen::gpu::attention_prefill, the engine's: 64 queries per block, Q K^T and P V as bf16 wmma tiles with
//       fp32 accumulation (tensor cores do many times the fp32 multiply-adds per cycle); q and P are rounded to
//       bf16, hence the looser tolerance. H200, Qwen2-7B heads at 2048 tokens: 0.81 ms per layer vs v1's 4.35
// usage: ./dev/bin/attention_prefill [version]   (Qwen2-7B and Qwen2.5-0.5B heads; one layer, prompt at pos 0)
#include "attention_prefill_v1.cuh"
#include "common.cuh"

using qwen::bf16;
using namespace qwen::gpu;

static void run(int v, const float* qkv, const bf16* K, const bf16* V, const int* pos, const int* table, bf16* out,
                int n, int H, int KV, int D, const Launch& l) {
    if (v == 1) attention_prefill_v1(qkv, K, V, pos, out, n, H, KV, D, l);
    if (v == 2) attention_prefill(qkv, K, V, pos, table, out, n, H, KV, D, l);
}

static int body(int argc, char** argv) {
    int v = bench::version_arg(argc, argv, 2);
    Launch l = make_launch(nullptr);
    // v1 rounds only its output to bf16 (NMSE ~1e-6); v2 also q and the probabilities (relative error ~2^-9 each)
    double tol = v == 1 ? 1e-5 : 1e-4;
    printf("attention_prefill v%d\n", v);
    printf("%-13s %5s %3s %4s %6s %10s %8s %10s\n", "shape", "heads", "kv", "D", "n", "us/layer", "TFLOP/s", "nmse");
    struct Shape {
        const char* name;
        int heads, kv_heads, D;
    };
    for (Shape s : {Shape{"qwen2-7b", 28, 4, 128}, Shape{"qwen2.5-0.5b", 14, 2, 64}}) {
        for (int n : {512, 2048}) {
            const int H = s.heads, KV = s.kv_heads, D = s.D;
            int q_dim = H * D, kv_dim = KV * D, width = q_dim + 2 * kv_dim;
            // qkv as the projections leave it (only the q columns are read); K/V rows 0 .. n-1 are the chunk's own
            std::vector<float> hqkv = bench::random_f32(size_t(n) * width, 3);
            float* qkv = bench::to_device(hqkv);
            bf16* K = bench::random_bf16(size_t(n) * kv_dim, 1, 1.0f, l);
            bf16* V = bench::random_bf16(size_t(n) * kv_dim, 2, 1.0f, l);
            int* pos = bench::to_device(std::vector<int>{0});
            std::vector<int> identity(size_t(qwen::kv_blocks_for(n)));  // the engine reads K/V through a block table
            for (size_t b = 0; b < identity.size(); b++) identity[b] = int(b);
            int* table = bench::to_device(identity);
            bf16* out = nullptr;
            CUDA_CHECK(cudaMalloc(&out, size_t(n) * q_dim * sizeof(bf16)));
            run(v, qkv, K, V, pos, table, out, n, H, KV, D, l);
            std::vector<bf16> hout = bench::to_host(out, size_t(n) * q_dim);
            std::vector<bf16> hK = bench::to_host(K, size_t(n) * kv_dim), hV = bench::to_host(V, size_t(n) * kv_dim);
            // 64 query rows spread over the prompt (first and last included), every head: checking every row
            // at n = 2048 would cost the CPU 32x as long
            const int n_check = 64;
            std::vector<float> got;
            std::vector<double> ref;
            for (int k = 0; k < n_check; k++) {
                int i = int(int64_t(k) * (n - 1) / (n_check - 1));
                for (int h = 0; h < H; h++) {
                    int kv_off = (h / (H / KV)) * D;
                    const float* q = hqkv.data() + size_t(i) * width + size_t(h) * D;
                    std::vector<double> p(size_t(i) + 1);
                    double m = -INFINITY, z = 0;
                    for (int t = 0; t <= i; t++) {
                        double a = 0;
                        const bf16* k_row = hK.data() + size_t(t) * kv_dim + kv_off;
                        for (int d = 0; d < D; d++) a += q[d] * double(qwen::bf16_to_f32(k_row[d]));
                        p[size_t(t)] = a / std::sqrt(double(D));
                        m = std::max(m, p[size_t(t)]);
                    }
                    for (double& e : p) z += (e = std::exp(e - m));
                    std::vector<double> o(size_t(D), 0.0);
                    for (int t = 0; t <= i; t++) {
                        const bf16* v_row = hV.data() + size_t(t) * kv_dim + kv_off;
                        for (int d = 0; d < D; d++) o[size_t(d)] += p[size_t(t)] * qwen::bf16_to_f32(v_row[d]);
                    }
                    for (int d = 0; d < D; d++) {
                        ref.push_back(o[size_t(d)] / z);
                        got.push_back(qwen::bf16_to_f32(hout[size_t(i) * q_dim + size_t(h) * D + d]));
                    }
                }
            }
            double err = bench::nmse(got, ref);
            // compute-bound: no rotation among copies to beat L2 (cache warmth barely matters here)
            float ms = bench::median_ms([&](int) { run(v, qkv, K, V, pos, table, out, n, H, KV, D, l); });
            double flops = 2.0 * 2.0 * H * D * (double(n) * (n + 1) / 2);
            printf("%-13s %5d %3d %4d %6d %10.1f %8.1f %10.2e%s\n", s.name, H, KV, D, n, ms * 1e3,
                   flops / (ms * 1e-3) / 1e12, err, err <= tol ? "" : "  FAILED");
            cudaFree(qkv), cudaFree(K), cudaFree(V), cudaFree(pos), cudaFree(table), cudaFree(out);
        }
    }
    return 0;
}

int main(int argc, char** argv) { return bench::run_main(body, argc, argv); }
