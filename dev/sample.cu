// Filtered sampling on the device (top-k 20 / top-p 0.8, the Qwen defaults) over the 151,936-token vocabulary:
// the part of a decode step after the lm_head, which should cost a few percent of a step at most.
//   v1  the engine's (GpuEngine::sample): argmax (the logits' check), softmax over the vocabulary in one block,
//       a radix sort of all (p, id) pairs, then select_token filters and draws over the sorted list
//   v2  sample_candidates (dev/sample_candidates.cuh, a candidate): one many-block pass collects the few tokens
//       within a factor 1024 of the most probable, one block sorts just those and draws; it hands over to v1
//       when there are too many of them. Promote it when it measures faster.
// Both must draw what the CPU Sampler draws with the same uniform.
// usage: ./dev/bin/sample [version]
#include "common.cuh"
#include "sample_candidates.cuh"

using namespace qwen::gpu;

static int body(int argc, char** argv) {
    int v = bench::version_arg(argc, argv, 2);
    Launch l = make_launch(nullptr);
    const int n = 151936;
    printf("sample v%d (top-k 20, top-p 0.8, temperature 0.7; %d tokens)\n", v, n);
    printf("%-8s %10s %12s\n", "logits", "us/draw", "cpu agrees");
    for (float scale : {1.0f, 3.0f}) {  // logits ~ N(0, scale): flat-ish and peaked
        std::vector<float> logits = bench::random_f32(size_t(n), 11);
        for (float& x : logits) x *= scale;
        float* x = bench::to_device(logits);
        float *prob = nullptr, *prob_sorted = nullptr, *cand_e = nullptr;
        int *ids = nullptr, *ids_sorted = nullptr, *out = nullptr, *cand_id = nullptr;
        Candidates* cand = nullptr;
        CUDA_CHECK(cudaMalloc(&prob, n * sizeof(float)));
        CUDA_CHECK(cudaMalloc(&prob_sorted, n * sizeof(float)));
        CUDA_CHECK(cudaMalloc(&ids_sorted, n * sizeof(int)));
        CUDA_CHECK(cudaMalloc(&out, 2 * sizeof(int)));
        CUDA_CHECK(cudaMalloc(&cand_e, SAMPLE_CAP * sizeof(float)));
        CUDA_CHECK(cudaMalloc(&cand_id, SAMPLE_CAP * sizeof(int)));
        CUDA_CHECK(cudaMalloc(&cand, sizeof(Candidates)));
        std::vector<int> iota(n);
        for (int i = 0; i < n; i++) iota[size_t(i)] = i;
        ids = bench::to_device(iota);
        size_t tmp_bytes = 0;
        CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, tmp_bytes, prob, prob_sorted, ids, ids_sorted, n));
        void* tmp = nullptr;
        CUDA_CHECK(cudaMalloc(&tmp, tmp_bytes));
        qwen::SamplingParams sp;
        sp.temperature = 0.7f, sp.top_k = 20, sp.top_p = 0.8f, sp.seed = 5;
        qwen::Sampler rng(sp), cpu(sp);
        SampleFilter f;
        f.top_k = sp.top_k, f.top_p = sp.top_p;
        auto full = [&] {
            softmax(x, n, sp.temperature, prob, l);
            size_t t = tmp_bytes;
            CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(tmp, t, prob, prob_sorted, ids, ids_sorted, n));
            select_token(prob_sorted, ids_sorted, n, f, out + 1, l);
        };
        auto draw = [&](int) {
            argmax(x, n, out, l);
            if (v == 1) return full();
            sample_candidates(x, n, out, sp.temperature, f, cand_e, cand_id, cand, out + 1, l);
            if (bench::to_host(out + 1, 1)[0] == SAMPLE_FALLBACK) full();
        };
        int agree = 0;
        for (int i = 0; i < 20; i++) {
            f.u = rng.rng.uniform();
            draw(0);
            std::vector<float> host = logits;
            agree += bench::to_host(out + 1, 1)[0] == cpu.sample(host.data(), n, {}, 0);
        }
        float ms = bench::median_ms(draw);
        printf("N(0, %g) %10.1f %9d/20%s\n", scale, ms * 1e3, agree, agree == 20 ? "" : "  FAILED");
        cudaFree(x), cudaFree(prob), cudaFree(prob_sorted), cudaFree(ids), cudaFree(ids_sorted), cudaFree(out);
        cudaFree(cand_e), cudaFree(cand_id), cudaFree(cand), cudaFree(tmp);
    }
    return 0;
}

int main(int argc, char** argv) { return bench::run_main(body, argc, argv); }
