// RMSNorm folded into the projection that follows it: y = W (x / rms(x) * g).
//   v1  qwen::gpu::rmsnorm to a buffer, then qwen::gpu::matvec (two launches, the normalised x round-trips)
//   v2  qwen::gpu::rmsnorm_matvec: every block computes the scale of x and stages x * scale * g in shared
//       memory before streaming its rows
// usage: ./dev/bin/rmsnorm_matvec [version]   (Qwen2-7B q/k/v and gate/up shapes)
#include "common.cuh"

using qwen::bf16;
using namespace qwen::gpu;

static void run(int v, const bf16* W, const float* x, const float* g, float* xn, float* y, int rows, int cols,
                const Launch& l) {
    const qwen::Tensor w = bf16_matrix(W, rows, cols);
    if (v == 1) {
        rmsnorm<float>(x, g, xn, 1, cols, 1e-6f, l);
        matvec(w, xn, y, l);
    } else {
        rmsnorm_matvec(mat_rows({&w}), x, g, 1e-6f, y, l);
    }
}

static int body(int argc, char** argv) {
    int v = bench::version_arg(argc, argv, 2);
    Launch l = make_launch(nullptr);
    double ceiling = bench::copy_gb_s();
    printf("rmsnorm_matvec v%d; device copy bandwidth %.0f GB/s\n", v, ceiling);
    printf("%-10s %7s %7s %9s %9s %8s %10s\n", "matrix", "rows", "cols", "MB", "us", "GB/s", "nmse");
    struct Shape {
        const char* name;
        int rows, cols;
    };
    for (Shape s : {Shape{"qkv", 4608, 3584}, Shape{"gate_up", 37888, 3584}, Shape{"qkv 0.5B", 1152, 896}}) {
        size_t n = size_t(s.rows) * s.cols, bytes = n * sizeof(bf16);
        int copies = bench::copies_to_beat_l2(bytes);
        std::vector<bf16*> W;
        for (int i = 0; i < copies; i++) W.push_back(bench::random_bf16(n, 1 + i, 0.05f, l));
        std::vector<float> hg = bench::random_f32(size_t(s.cols), 99);
        float* g = bench::to_device(hg);
        std::vector<float> hx = bench::random_f32(size_t(s.cols), 7);
        float* x = bench::to_device(hx);
        float *xn = nullptr, *y = nullptr;
        CUDA_CHECK(cudaMalloc(&xn, s.cols * sizeof(float)));
        CUDA_CHECK(cudaMalloc(&y, s.rows * sizeof(float)));
        run(v, W[0], x, g, xn, y, s.rows, s.cols, l);
        std::vector<bf16> hW = bench::to_host(W[0], n);
        double ss = 0;
        for (float a : hx) ss += double(a) * a;
        double scale = 1.0 / std::sqrt(ss / s.cols + 1e-6);
        std::vector<double> ref(size_t(s.rows));
        for (int r = 0; r < s.rows; r++) {
            double a = 0;
            for (int c = 0; c < s.cols; c++)
                a += double(qwen::bf16_to_f32(hW[size_t(r) * s.cols + c])) * hx[size_t(c)] * scale * hg[size_t(c)];
            ref[size_t(r)] = a;
        }
        double err = bench::nmse(bench::to_host(y, size_t(s.rows)), ref);
        float ms = bench::median_ms([&](int i) { run(v, W[size_t(i % copies)], x, g, xn, y, s.rows, s.cols, l); });
        printf("%-10s %7d %7d %9.1f %9.1f %8.0f %10.2e%s\n", s.name, s.rows, s.cols, bytes / 1e6, ms * 1e3,
               bytes / (ms * 1e-3) / 1e9, err, err <= 1e-8 ? "" : "  FAILED");
        for (bf16* p : W) cudaFree(p);
        cudaFree(g);
        cudaFree(x);
        cudaFree(xn);
        cudaFree(y);
    }
    return 0;
}

int main(int argc, char** argv) { return bench::run_main(body, argc, argv); }
