// The decode matvec and the prefill's bf16 decoding over llama.cpp's block types, Qwen2-7B shapes:
//   v1  the engine's (qwen.cuh: warp_rows_blocks, dequantize_bf16): a lane decodes a whole chunk (32 to 128
//       values) and multiplies it value by value (H200: ~21 ms per 7B step whatever the type)
//   v2  dev/matvec_quant.cuh: lanes take consecutive groups of 8 values (coalesced x, 16-byte stores)
// usage: ./dev/bin/matvec_quant [version] [types, e.g. Q4_K,Q6_K]   (checks against the CPU, prints GB/s of the
// blocks read; dequantize: of the blocks read and the bf16 written)
#include "common.cuh"
#include "matvec_quant.cuh"

using namespace qwen;
using namespace qwen::gpu;

namespace {

// A device copy of n bytes with 16 spare bytes before and after (the matvec's windows may reach 15 bytes past).
struct Padded {
    uint8_t* base = nullptr;
    explicit Padded(const std::vector<uint8_t>& h) {
        CUDA_CHECK(cudaMalloc(&base, h.size() + 32));
        CUDA_CHECK(cudaMemset(base, 0, h.size() + 32));
        CUDA_CHECK(cudaMemcpy(base + 16, h.data(), h.size(), cudaMemcpyHostToDevice));
    }
    ~Padded() { cudaFree(base); }
    Padded(const Padded&) = delete;
    const uint8_t* ptr() const { return base + 16; }
};

struct Shape {
    const char* name;
    int rows, cols;
    int form;  // 0: y = W x, 1: y += W x, 2: y = [W] rmsnorm(x), 3: silu(Wg xn) * (Wu xn) (rows each)
};

void run(int v, int form, const Tensor& w, const Tensor& u, const float* x, const float* g, float* y, const Launch& l) {
    MatRows one = mat_rows({&w}), two = mat_rows({&w, &u});
    if (v == 1) {
        if (form == 0) matvec(w, x, y, l);
        if (form == 1) matvec_residual(w, x, y, l);
        if (form == 2) rmsnorm_matvec(one, x, g, 1e-6f, y, l);
        if (form == 3) rmsnorm_matvec_swiglu(w, u, x, g, 1e-6f, y, l);
    } else {
        if (form == 0) matvec_v2_launch<false, MV_STORE>(one, x, nullptr, 0.0f, y, l);
        if (form == 1) matvec_v2_launch<false, MV_ADD>(one, x, nullptr, 0.0f, y, l);
        if (form == 2) matvec_v2_launch<true, MV_STORE>(one, x, g, 1e-6f, y, l);
        if (form == 3) matvec_v2_launch<true, MV_SWIGLU>(two, x, g, 1e-6f, y, l);
    }
}

// The expected y of a form, in double, from the CPU's decoded rows (y starts at 0 for form 1).
std::vector<double> reference(int form, const Tensor& w, const Tensor& u, const std::vector<float>& x,
                              const std::vector<float>& g) {
    std::vector<double> xn(x.begin(), x.end());
    if (form >= 2) {
        double ss = 0;
        for (float v : x) ss += double(v) * v;
        double s = 1 / std::sqrt(ss / double(x.size()) + 1e-6);
        for (size_t c = 0; c < x.size(); c++) xn[c] = x[c] * s * g[c];
    }
    std::vector<float> row(size_t(w.cols));
    auto dot = [&](const Tensor& m, int r) {
        dequantize_row(m, r, row.data());
        double a = 0;
        for (int c = 0; c < m.cols; c++) a += double(row[size_t(c)]) * xn[size_t(c)];
        return a;
    };
    std::vector<double> y(size_t(w.rows));
    for (int r = 0; r < w.rows; r++) {
        y[size_t(r)] = dot(w, r);
        if (form == 3) y[size_t(r)] = y[size_t(r)] / (1 + std::exp(-y[size_t(r)])) * dot(u, r);
    }
    return y;
}

std::vector<uint8_t> random_matrix(DType t, int rows, int cols, uint64_t seed) {
    std::vector<uint8_t> h(size_t(Tensor{nullptr, t, rows, cols}.bytes()));
    bench::random_blocks(h.data(), t, h.size() / size_t(dtype_info(t).bytes), 0.05f, seed);
    return h;
}

void bench_type(int v, DType t, const Launch& l) {
    const Shape shapes[] = {{"qkv+norm", 4608, 3584, 2}, {"o+add", 3584, 3584, 1}, {"gate_up+swiglu", 18944, 3584, 3},
                            {"down+add", 3584, 18944, 1}, {"lm_head", 152064, 3584, 0}};
    for (const Shape& s : shapes) {
        if (s.cols % dtype_info(t).block) continue;
        const size_t mat_bytes = size_t(Tensor{nullptr, t, s.rows, s.cols}.bytes());
        const size_t bytes = mat_bytes * (s.form == 3 ? 2 : 1);
        const int copies = bench::copies_to_beat_l2(bytes);
        std::vector<std::unique_ptr<Padded>> W, U;
        std::vector<uint8_t> h0 = random_matrix(t, s.rows, s.cols, 1), u0 = random_matrix(t, s.rows, s.cols, 2);
        for (int i = 0; i < copies; i++) {
            W.push_back(std::make_unique<Padded>(i ? random_matrix(t, s.rows, s.cols, 3 + 2 * i) : h0));
            U.push_back(std::make_unique<Padded>(i ? random_matrix(t, s.rows, s.cols, 4 + 2 * i) : u0));
        }
        std::vector<float> hx = bench::random_f32(size_t(s.cols), 7), hg = bench::random_f32(size_t(s.cols), 8);
        float *x = bench::to_device(hx), *g = bench::to_device(hg), *y = nullptr;
        CUDA_CHECK(cudaMalloc(&y, size_t(s.rows) * sizeof(float)));
        CUDA_CHECK(cudaMemset(y, 0, size_t(s.rows) * sizeof(float)));
        auto view = [&](const std::vector<std::unique_ptr<Padded>>& m, int i) {
            return Tensor{m[size_t(i)]->ptr(), t, s.rows, s.cols};
        };
        run(v, s.form, view(W, 0), view(U, 0), x, g, y, l);  // correctness on copy 0, from y = 0
        double err = bench::nmse(bench::to_host(y, size_t(s.rows)),
                                 reference(s.form, Tensor{h0.data(), t, s.rows, s.cols},
                                           Tensor{u0.data(), t, s.rows, s.cols}, hx, hg));
        float ms = bench::median_ms([&](int i) { run(v, s.form, view(W, i % copies), view(U, i % copies), x, g, y, l); });
        printf("%-5s %-15s %7d %7d %8.1f %9.1f %8.0f %10.2e%s\n", dtype_name(t).c_str(), s.name, s.rows, s.cols,
               bytes / 1e6, ms * 1e3, bytes / (ms * 1e-3) / 1e9, err, err <= 1e-8 ? "" : "  FAILED");
        cudaFree(x), cudaFree(g), cudaFree(y);
    }
    // the prefill's decoding of gate_up's gate (bytes: the blocks read + the bf16 written)
    const int rows = 18944, cols = 3584;
    std::vector<uint8_t> h = random_matrix(t, rows, cols, 5);
    Padded d(h);
    bf16* out = nullptr;
    CUDA_CHECK(cudaMalloc(&out, size_t(rows) * cols * sizeof(bf16)));
    const Tensor w{d.ptr(), t, rows, cols};
    auto dq = [&](int) { v == 1 ? dequantize_bf16(w, out, l) : dequantize_bf16_v2(w, out, l); };
    dq(0);
    std::vector<bf16> got = bench::to_host(out, size_t(rows) * cols);
    std::vector<float> row(static_cast<size_t>(cols));
    size_t bad = 0;
    for (int r = 0; r < rows; r += 97) {  // a sample of rows, exactly
        dequantize_row(Tensor{h.data(), t, rows, cols}, r, row.data());
        for (int c = 0; c < cols; c++) bad += got[size_t(r) * cols + size_t(c)] != f32_to_bf16(row[size_t(c)]);
    }
    float ms = bench::median_ms(dq, 20, 2);
    double moved = double(h.size()) + double(rows) * cols * sizeof(bf16);
    printf("%-5s %-15s %7d %7d %8.1f %9.1f %8.0f %10s%s\n", dtype_name(t).c_str(), "dequantize_bf16", rows, cols,
           moved / 1e6, ms * 1e3, moved / (ms * 1e-3) / 1e9, bad ? "differs" : "exact", bad ? "  FAILED" : "");
    cudaFree(out);
}

int body(int argc, char** argv) {
    int v = bench::version_arg(argc, argv, 2);
    std::string types = argc > 2 ? argv[2] : "Q4_K,Q6_K,Q8_0,Q5_K,Q4_0";
    Launch l = make_launch(nullptr);
    printf("matvec_quant v%d; device copy bandwidth %.0f GB/s\n", v, bench::copy_gb_s());
    printf("%-5s %-15s %7s %7s %8s %9s %8s %10s\n", "type", "matrix", "rows", "cols", "MB", "us", "GB/s", "nmse");
    for (DType t : {DT_Q4_K, DT_Q6_K, DT_Q8_0, DT_Q5_K, DT_Q4_0, DT_Q5_0})
        if (("," + types + ",").find("," + dtype_name(t) + ",") != std::string::npos) bench_type(v, t, l);
    return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench::run_main(body, argc, argv); }
