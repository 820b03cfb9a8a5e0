// GPU tests: every kernel against a CPU reference in double precision on random inputs (odd sizes, guard
// regions around outputs, poisoned outputs so that unwritten elements show as NaN), then the whole engine
// against the Hugging Face logits of the tiny fixtures, the CPU engine, and itself (prefill vs decode,
// graph vs no graph), and the on-device sampler against the CPU Sampler.
// Without a CUDA device every test case is marked skipped (doctest's summary counts them) and the binary
// prints one SKIPPED line; it still exits 0.
#include <doctest/doctest.h>

#include <map>
#include <numeric>
#include <random>

#include "qwen.cuh"  // the emulated build finds its rewritten copy first
#include "fixtures.hpp"

using namespace qwen;
using json = nlohmann::json;

namespace {

// Asked once, when the first test case registers (static initialisation: the CUDA runtime initialises
// itself lazily on this first call, and a machine without a driver just answers "no device").
bool have_gpu() {
    static const bool ok = [] {
        bool found = gpu::device_available();
        if (!found) printf("SKIPPED: no CUDA device, the GPU tests are not run\n");
        return found;
    }();
    return ok;
}

}  // namespace

TEST_SUITE_BEGIN("gpu" * doctest::skip(!have_gpu()));

namespace {

// ---- host-side helpers ----

std::mt19937& rng() {
    static std::mt19937 g(1234);
    return g;
}
std::vector<float> randn(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng());
    return v;
}
std::vector<bf16> to_bf16(const std::vector<float>& v) {
    std::vector<bf16> o(v.size());
    for (size_t i = 0; i < v.size(); i++) o[i] = f32_to_bf16(v[i]);
    return o;
}
std::vector<float> to_f32(const std::vector<bf16>& v) {
    std::vector<float> o(v.size());
    for (size_t i = 0; i < v.size(); i++) o[i] = bf16_to_f32(v[i]);
    return o;
}
// bf16 values as floats (random, exactly representable in bf16)
std::vector<float> randn_bf(size_t n, float scale = 1.0f) { return to_f32(to_bf16(randn(n, scale))); }

// sum (got - ref)^2 / sum ref^2; NaN anywhere makes it infinite
template <typename A, typename B>
double nmse(const A& got, const B& ref) {
    REQUIRE(got.size() == ref.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); i++) {
        double g = double(got[i]), r = double(ref[i]);
        if (std::isnan(g)) return INFINITY;
        num += (g - r) * (g - r);
        den += r * r;
    }
    return den > 0 ? num / den : num;
}

// A device array with guard regions on both sides filled with a sentinel; the payload starts poisoned
// (NaN for floats) unless filled. check() verifies the guards and returns the payload.
template <typename T>
struct Guarded {
    static constexpr size_t G = 64;
    size_t n;
    T* base = nullptr;
    T sentinel;
    explicit Guarded(size_t count) : n(count), sentinel(make_sentinel()) {
        CUDA_CHECK(cudaMalloc(&base, (n + 2 * G) * sizeof(T)));
        std::vector<T> init(n + 2 * G, sentinel);
        CUDA_CHECK(cudaMemcpy(base, init.data(), init.size() * sizeof(T), cudaMemcpyHostToDevice));
    }
    Guarded(const std::vector<T>& v) : Guarded(v.size()) { upload(v); }
    ~Guarded() { cudaFree(base); }
    Guarded(const Guarded&) = delete;
    T* ptr() { return base + G; }
    void upload(const std::vector<T>& v) {
        REQUIRE(v.size() == n);
        CUDA_CHECK(cudaMemcpy(ptr(), v.data(), n * sizeof(T), cudaMemcpyHostToDevice));
    }
    std::vector<T> check() {
        CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<T> all(n + 2 * G);
        CUDA_CHECK(cudaMemcpy(all.data(), base, all.size() * sizeof(T), cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < G; i++) {
            CHECK_MESSAGE(memcmp(&all[i], &sentinel, sizeof(T)) == 0, "guard before the output was written");
            CHECK_MESSAGE(memcmp(&all[G + n + i], &sentinel, sizeof(T)) == 0, "guard after the output was written");
        }
        return std::vector<T>(all.begin() + G, all.begin() + G + n);
    }
    static T make_sentinel() {
        T t;
        if (sizeof(T) == 4) {
            uint32_t u = 0x7fc0dead;  // a quiet NaN as float, a large value as int
            memcpy(&t, &u, 4);
        } else {
            uint16_t u = 0x7fc1;  // a bf16 NaN
            memcpy(&t, &u, 2);
        }
        return t;
    }
};

gpu::Launch launch() { return gpu::make_launch(nullptr); }

// ---- CPU references (double) ----

std::vector<double> ref_rmsnorm(const std::vector<float>& x, const std::vector<float>& g, float eps) {
    size_t dim = g.size(), n = x.size() / dim;
    std::vector<double> out(x.size());
    for (size_t t = 0; t < n; t++) {
        double ss = 0;
        for (size_t c = 0; c < dim; c++) ss += double(x[t * dim + c]) * x[t * dim + c];
        double s = 1.0 / std::sqrt(ss / dim + eps);
        for (size_t c = 0; c < dim; c++) out[t * dim + c] = x[t * dim + c] * s * g[c];
    }
    return out;
}
template <typename X>
std::vector<double> ref_matvec(const std::vector<float>& W, const X& x, size_t rows, size_t cols) {
    std::vector<double> y(rows);
    for (size_t r = 0; r < rows; r++) {
        double s = 0;
        for (size_t c = 0; c < cols; c++) s += double(W[r * cols + c]) * double(x[c]);
        y[r] = s;
    }
    return y;
}
double ref_silu(double g) { return g / (1.0 + std::exp(-g)); }

// Attention of one query (n_heads, D) over T cached rows (T, kv_dim).
std::vector<double> ref_attention(const std::vector<float>& q, const std::vector<float>& K, const std::vector<float>& V,
                                  int T, int n_heads, int n_kv, int D) {
    std::vector<double> out(size_t(n_heads) * D, 0.0);
    int kv_dim = n_kv * D;
    for (int h = 0; h < n_heads; h++) {
        int kvh = h / (n_heads / n_kv);
        std::vector<double> s(T);
        double m = -INFINITY;
        for (int t = 0; t < T; t++) {
            double a = 0;
            for (int d = 0; d < D; d++) a += double(q[size_t(h) * D + d]) * K[size_t(t) * kv_dim + kvh * D + d];
            s[size_t(t)] = a / std::sqrt(double(D));
            m = std::max(m, s[size_t(t)]);
        }
        double z = 0;
        for (double& v : s) z += (v = std::exp(v - m));
        for (int t = 0; t < T; t++)
            for (int d = 0; d < D; d++)
                out[size_t(h) * D + d] += s[size_t(t)] / z * V[size_t(t) * kv_dim + kvh * D + d];
    }
    return out;
}

}  // namespace

// ============================================================================
// Elementwise kernels
// ============================================================================

TEST_CASE("gpu: rmsnorm (fp32 and bf16 out) matches the CPU") {
    for (int dim : {8, 64, 296, 896, 3584}) {
        CAPTURE(dim);
        int n = 3;
        std::vector<float> x = randn(size_t(n) * dim, 2.0f), g = randn_bf(dim);
        Guarded<float> dx(x);
        Guarded<bf16> dg(to_bf16(g));
        Guarded<float> out32(x.size());
        Guarded<bf16> out16(x.size());
        gpu::rmsnorm<float>(dx.ptr(), dg.ptr(), out32.ptr(), n, dim, 1e-6f, launch());
        gpu::rmsnorm<bf16>(dx.ptr(), dg.ptr(), out16.ptr(), n, dim, 1e-6f, launch());
        std::vector<double> ref = ref_rmsnorm(x, g, 1e-6f);
        CHECK(nmse(out32.check(), ref) <= 1e-12);
        std::vector<double> ref16(ref.size());  // the bf16 output can only be the rounded reference
        for (size_t i = 0; i < ref.size(); i++) ref16[i] = bf16_to_f32(f32_to_bf16(float(ref[i])));
        CHECK(nmse(to_f32(out16.check()), ref16) <= 1e-6);
    }
}

TEST_CASE("gpu: swiglu matches the CPU") {
    for (int ffn : {8, 200, 4864}) {
        int n = 2;
        std::vector<float> gu = randn(size_t(n) * 2 * ffn, 3.0f);
        Guarded<float> dgu(gu);
        Guarded<float> out(size_t(n) * ffn);
        gpu::swiglu<float>(dgu.ptr(), out.ptr(), n, ffn, launch());
        std::vector<double> ref(size_t(n) * ffn);
        for (int t = 0; t < n; t++)
            for (int i = 0; i < ffn; i++)
                ref[size_t(t) * ffn + i] = ref_silu(gu[size_t(t) * 2 * ffn + i]) * gu[size_t(t) * 2 * ffn + ffn + i];
        CHECK(nmse(out.check(), ref) <= 1e-10);
    }
}

// ============================================================================
// Matrix-vector products (decode)
// ============================================================================

TEST_CASE("gpu: matvec and its fused forms match the CPU") {
    // rows not a multiple of the block's rows; cols a multiple of 8 (16-byte loads) or not (the scalar path)
    const int shapes[][2] = {{1, 8},      {7, 64},      {37, 296}, {1000, 896}, {1153, 1160},
                             {896, 4864}, {300, 13000}, {5, 13},   {64, 100},   {33, 1003}};
    for (auto& s : shapes) {
        int rows = s[0], cols = s[1];
        CAPTURE(rows);
        CAPTURE(cols);
        std::vector<float> W = randn_bf(size_t(rows) * cols, 0.05f), x = randn(cols), g = randn_bf(cols),
                           y0 = randn(rows);
        Guarded<bf16> dW(to_bf16(W));
        Guarded<float> dx(x), y(rows);
        Guarded<bf16> dg(to_bf16(g));
        std::vector<double> xn = ref_rmsnorm(x, g, 1e-6f);

        gpu::matvec_ref(dW.ptr(), dx.ptr(), y.ptr(), rows, cols, launch());
        CHECK(nmse(y.check(), ref_matvec(W, x, rows, cols)) <= 1e-10);

        gpu::matvec(dW.ptr(), dx.ptr(), y.ptr(), rows, cols, launch());
        CHECK(nmse(y.check(), ref_matvec(W, x, rows, cols)) <= 1e-10);

        gpu::rmsnorm_matvec(dW.ptr(), dx.ptr(), dg.ptr(), 1e-6f, y.ptr(), rows, cols, launch());
        CHECK(nmse(y.check(), ref_matvec(W, xn, rows, cols)) <= 1e-10);

        y.upload(y0);
        gpu::matvec_residual(dW.ptr(), dx.ptr(), y.ptr(), rows, cols, launch());
        std::vector<double> ref = ref_matvec(W, x, rows, cols);
        for (int r = 0; r < rows; r++) ref[size_t(r)] += y0[size_t(r)];
        CHECK(nmse(y.check(), ref) <= 1e-10);

        if (rows % 2 == 0) {  // W as (2 * ffn, cols): gate rows, then up rows
            int ffn = rows / 2;
            Guarded<float> h(ffn);
            gpu::rmsnorm_matvec_swiglu(dW.ptr(), dx.ptr(), dg.ptr(), 1e-6f, h.ptr(), ffn, cols, launch());
            std::vector<double> gu = ref_matvec(W, xn, rows, cols), want(ffn);
            for (int i = 0; i < ffn; i++) want[size_t(i)] = ref_silu(gu[size_t(i)]) * gu[size_t(ffn + i)];
            CHECK(nmse(h.check(), want) <= 1e-10);
        }
    }
}

TEST_CASE("gpu: gemm (cuBLAS, bf16 in, fp32 out) matches the CPU, with and without accumulation") {
    cublasHandle_t h;
    CUBLAS_CHECK(cublasCreate(&h));
    const int shapes[][3] = {{1, 8, 8}, {5, 37, 64}, {33, 200, 296}, {512, 96, 64}};
    for (auto& s : shapes) {
        int n = s[0], rows = s[1], cols = s[2];
        std::vector<float> W = randn_bf(size_t(rows) * cols), X = randn_bf(size_t(n) * cols),
                           Y0 = randn(size_t(n) * rows);
        Guarded<bf16> dW(to_bf16(W)), dX(to_bf16(X));
        Guarded<float> Y(Y0);
        std::vector<double> ref(size_t(n) * rows);
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows; r++) {
                double a = 0;
                for (int c = 0; c < cols; c++) a += double(W[size_t(r) * cols + c]) * X[size_t(t) * cols + c];
                ref[size_t(t) * rows + r] = a;
            }
        gpu::gemm(h, dW.ptr(), dX.ptr(), Y.ptr(), n, rows, cols, false);
        CHECK(nmse(Y.check(), ref) <= 1e-10);
        gpu::gemm(h, dW.ptr(), dX.ptr(), Y.ptr(), n, rows, cols, true);
        for (size_t i = 0; i < ref.size(); i++) ref[i] *= 2;
        CHECK(nmse(Y.check(), ref) <= 1e-10);
    }
    cublasDestroy(h);
}

// ============================================================================
// q/k/v epilogue: bias, q/k norm, RoPE, KV-cache write
// ============================================================================

TEST_CASE("gpu: qkv_epilogue applies bias, q/k norm and RoPE and fills the cache rows") {
    struct Case {
        int n_heads, n_kv, D;
        bool bias, norm;
    };
    for (Case cs : {Case{4, 2, 16, true, false}, Case{14, 2, 64, true, false}, Case{4, 4, 128, false, true},
                    Case{7, 1, 256, true, true}}) {
        CAPTURE(cs.D);
        int n = 3, pos0 = 5, context = 16, q_dim = cs.n_heads * cs.D, kv_dim = cs.n_kv * cs.D;
        int width = q_dim + 2 * kv_dim, half = cs.D / 2;
        float eps = 1e-6f;
        double theta = 1e6;
        std::vector<float> qkv = randn(size_t(n) * width), bias = randn_bf(width), qn = randn_bf(cs.D),
                           kn = randn_bf(cs.D);
        std::vector<float> inv(half);
        for (int i = 0; i < half; i++) inv[size_t(i)] = float(1.0 / std::pow(theta, 2.0 * i / cs.D));
        Guarded<float> dqkv(qkv), dinv(inv);
        Guarded<bf16> db(to_bf16(bias)), dqn(to_bf16(qn)), dkn(to_bf16(kn));
        Guarded<bf16> kc(size_t(context) * kv_dim), vc(size_t(context) * kv_dim);
        Guarded<int> dpos(std::vector<int>{pos0});
        gpu::QkvLayer L;
        L.bias = cs.bias ? db.ptr() : nullptr;
        L.q_norm = cs.norm ? dqn.ptr() : nullptr;
        L.k_norm = cs.norm ? dkn.ptr() : nullptr;
        L.k_cache = kc.ptr();
        L.v_cache = vc.ptr();
        gpu::qkv_epilogue(dqkv.ptr(), L, dinv.ptr(), dpos.ptr(), n, cs.n_heads, cs.n_kv, cs.D, eps, launch());

        // the CPU version, head by head
        std::vector<double> want_q(size_t(n) * q_dim), want_k(size_t(n) * kv_dim), want_v(size_t(n) * kv_dim);
        for (int t = 0; t < n; t++)
            for (int head = 0; head < cs.n_heads + 2 * cs.n_kv; head++) {
                int kind = head < cs.n_heads ? 0 : head < cs.n_heads + cs.n_kv ? 1 : 2;
                std::vector<double> v(cs.D);
                for (int d = 0; d < cs.D; d++)
                    v[size_t(d)] =
                        qkv[size_t(t) * width + head * cs.D + d] + (cs.bias ? bias[size_t(head * cs.D + d)] : 0);
                if (cs.norm && kind < 2) {
                    double ss = 0;
                    for (double a : v) ss += a * a;
                    double s = 1.0 / std::sqrt(ss / cs.D + eps);
                    for (int d = 0; d < cs.D; d++) v[size_t(d)] *= s * (kind == 0 ? qn : kn)[size_t(d)];
                }
                if (kind < 2)
                    for (int i = 0; i < half; i++) {
                        double ang = double(float(pos0 + t) * inv[size_t(i)]);
                        double a = v[size_t(i)], b = v[size_t(i + half)];
                        v[size_t(i)] = a * std::cos(ang) - b * std::sin(ang);
                        v[size_t(i + half)] = b * std::cos(ang) + a * std::sin(ang);
                    }
                for (int d = 0; d < cs.D; d++) {
                    if (kind == 0) want_q[size_t(t) * q_dim + head * cs.D + d] = v[size_t(d)];
                    double r = bf16_to_f32(f32_to_bf16(float(v[size_t(d)])));  // the cache holds bf16
                    int col = (head - cs.n_heads - (kind == 2 ? cs.n_kv : 0)) * cs.D + d;
                    if (kind == 1) want_k[size_t(t) * kv_dim + col] = r;
                    if (kind == 2) want_v[size_t(t) * kv_dim + col] = r;
                }
            }
        std::vector<float> got = dqkv.check(), got_q;
        for (int t = 0; t < n; t++)
            got_q.insert(got_q.end(), got.begin() + size_t(t) * width, got.begin() + size_t(t) * width + q_dim);
        CHECK(nmse(got_q, want_q) <= 1e-10);
        std::vector<float> k = to_f32(kc.check()), v = to_f32(vc.check());
        std::vector<float> k_rows(k.begin() + size_t(pos0) * kv_dim, k.begin() + size_t(pos0 + n) * kv_dim);
        std::vector<float> v_rows(v.begin() + size_t(pos0) * kv_dim, v.begin() + size_t(pos0 + n) * kv_dim);
        CHECK(nmse(k_rows, want_k) <= 1e-6);
        CHECK(nmse(v_rows, want_v) <= 1e-6);
        for (size_t i = 0; i < size_t(pos0) * kv_dim; i++) REQUIRE(std::isnan(k[i]));  // rows before: untouched
        for (size_t i = size_t(pos0 + n) * kv_dim; i < k.size(); i++) REQUIRE(std::isnan(v[i]));  // and after
    }
}

// ============================================================================
// Attention
// ============================================================================

TEST_CASE("gpu: split-context decode attention and its reference match the CPU") {
    struct Case {
        int n_heads, n_kv, D;
    };
    // GQA ratios 1, 2, 7 and 8 (the largest group the grouped kernel takes), head_dim 16 to 256
    for (Case cs : {Case{4, 4, 64}, Case{8, 4, 128}, Case{14, 2, 64}, Case{28, 4, 128}, Case{2, 1, 16},
                    Case{8, 1, 256}}) {
        for (int T : {1, 2, 17, 128, 1000, 4096}) {
            CAPTURE(cs.n_heads);
            CAPTURE(cs.D);
            CAPTURE(T);
            int context = T + 3, kv_dim = cs.n_kv * cs.D;
            std::vector<float> q = randn(size_t(cs.n_heads) * cs.D), K = randn_bf(size_t(context) * kv_dim),
                               V = randn_bf(size_t(context) * kv_dim);
            Guarded<float> dq(q), out(q.size());
            Guarded<bf16> dK(to_bf16(K)), dV(to_bf16(V));
            Guarded<int> dpos(std::vector<int>{T - 1});
            std::vector<double> want = ref_attention(q, K, V, T, cs.n_heads, cs.n_kv, cs.D);

            gpu::attention_decode_ref(dq.ptr(), dK.ptr(), dV.ptr(), out.ptr(), T, cs.n_heads, cs.n_kv, cs.D, launch());
            CHECK(nmse(out.check(), want) <= 1e-8);  // fp32 math on exact bf16 inputs
            for (int parts : {1, 3, 64, gpu::attention_parts(cs.n_heads, context, launch())}) {
                for (bool grouped : {false, true}) {
                    CAPTURE(parts);
                    CAPTURE(grouped);
                    Guarded<float> po(size_t(cs.n_heads) * parts * cs.D), pml(size_t(cs.n_heads) * parts * 2);
                    gpu::attention_decode(dq.ptr(), dK.ptr(), dV.ptr(), dpos.ptr(), po.ptr(), pml.ptr(), out.ptr(),
                                          parts, cs.n_heads, cs.n_kv, cs.D, grouped, launch());
                    CHECK(nmse(out.check(), want) <= 1e-8);  // fp32 math on exact bf16 inputs
                    po.check();
                    pml.check();
                }
            }
        }
    }
}

TEST_CASE("gpu: tiled causal prefill attention, on CUDA cores and on tensor cores, matches the CPU") {
    struct Case {
        int n_heads, n_kv, D;
    };
    double worst_tc = 0;
    for (Case cs : {Case{4, 2, 16}, Case{4, 2, 32}, Case{14, 2, 64}, Case{7, 7, 128}, Case{2, 1, 256}}) {
        for (int pos0 : {0, 37}) {
            for (int n : {1, 5, 33, 100, 130}) {
                CAPTURE(cs.D);
                CAPTURE(cs.n_heads);
                CAPTURE(pos0);
                CAPTURE(n);
                int q_dim = cs.n_heads * cs.D, kv_dim = cs.n_kv * cs.D, width = q_dim + 2 * kv_dim;
                int context = pos0 + n + 2;
                std::vector<float> qkv = randn(size_t(n) * width), K = randn_bf(size_t(context) * kv_dim),
                                   V = randn_bf(size_t(context) * kv_dim);
                Guarded<float> dqkv(qkv);
                Guarded<bf16> dK(to_bf16(K)), dV(to_bf16(V)), out(size_t(n) * q_dim);
                Guarded<int> dpos(std::vector<int>{pos0});
                gpu::attention_prefill(dqkv.ptr(), dK.ptr(), dV.ptr(), dpos.ptr(), out.ptr(), n, cs.n_heads, cs.n_kv,
                                       cs.D, launch());
                Guarded<bf16> out_tc(size_t(n) * q_dim), out_small(size_t(n) * q_dim);
                gpu::attention_prefill_tc(dqkv.ptr(), dK.ptr(), dV.ptr(), dpos.ptr(), out_tc.ptr(), n, cs.n_heads,
                                          cs.n_kv, cs.D, launch());
                // as on a GPU whose blocks get at most 99 KB of shared memory (sm_86 / sm_89): D = 256 takes the
                // CUDA-core kernel there
                gpu::Launch small = launch();
                small.smem_optin = std::min<size_t>(small.smem_optin, 101376);
                gpu::attention_prefill_tc(dqkv.ptr(), dK.ptr(), dV.ptr(), dpos.ptr(), out_small.ptr(), n, cs.n_heads,
                                          cs.n_kv, cs.D, small);
                std::vector<double> want;
                for (int i = 0; i < n; i++) {  // query i sees rows 0 .. pos0 + i
                    std::vector<float> q(qkv.begin() + size_t(i) * width, qkv.begin() + size_t(i) * width + q_dim);
                    std::vector<double> o = ref_attention(q, K, V, pos0 + i + 1, cs.n_heads, cs.n_kv, cs.D);
                    want.insert(want.end(), o.begin(), o.end());
                }
                // fp32 math, bf16 output: the error is that of rounding the reference to bf16 (up to ~1e-5 on
                // a few dozen values), plus a margin for the fp32 arithmetic
                std::vector<double> rounded(want.size());
                for (size_t i = 0; i < want.size(); i++) rounded[i] = bf16_to_f32(f32_to_bf16(float(want[i])));
                CHECK(nmse(to_f32(out.check()), want) <= nmse(rounded, want) + 1e-6);
                // tensor cores: q and the probabilities are rounded to bf16 as well (relative error ~2^-9 each)
                std::vector<bf16> got_tc = out_tc.check();
                double tc = nmse(to_f32(got_tc), want);
                CHECK(tc <= 1e-4);
                if (gpu::TcSmem<256>::BYTES > small.smem_optin && cs.D == 256) CHECK(out_small.check() == out.check());
                else CHECK(out_small.check() == got_tc);
                worst_tc = std::max(worst_tc, tc);
                dqkv.check();
            }
        }
    }
    MESSAGE("tensor-core prefill attention: worst NMSE vs the fp64 reference ", worst_tc);
}

TEST_CASE("gpu: attention launchers refuse shapes their kernels cannot take") {
    Guarded<float> f(64);
    Guarded<bf16> b(64);
    Guarded<int> pos(std::vector<int>{0});
    // a GQA group of 16 query heads is past the grouped kernel's 8 (the per-head kernel takes it)
    CHECK_THROWS_WITH_AS(gpu::attention_decode(f.ptr(), b.ptr(), b.ptr(), pos.ptr(), f.ptr(), f.ptr(), f.ptr(), 1, 16,
                                               1, 16, true, launch()),
                         doctest::Contains("at most 8"), Error);
    for (auto prefill : {gpu::attention_prefill, gpu::attention_prefill_tc}) {
        CHECK_THROWS_WITH_AS(prefill(f.ptr(), b.ptr(), b.ptr(), pos.ptr(), b.ptr(), 0, 4, 2, 16, launch()),
                             doctest::Contains("n must be >= 1"), Error);
        CHECK_THROWS_WITH_AS(prefill(f.ptr(), b.ptr(), b.ptr(), pos.ptr(), b.ptr(), 1, 4, 3, 16, launch()),
                             doctest::Contains("not a multiple"), Error);
        CHECK_THROWS_WITH_AS(prefill(f.ptr(), b.ptr(), b.ptr(), pos.ptr(), b.ptr(), 1, 4, 2, 48, launch()),
                             doctest::Contains("head_dim 48"), Error);
    }
    f.check(), b.check();
}

// ============================================================================
// Sampling kernels
// ============================================================================

TEST_CASE("gpu: argmax returns the lowest index of the maximum") {
    for (int n : {1, 7, 1024, 1025, 151936}) {
        std::vector<float> x = randn(n);
        int want = int(std::uniform_int_distribution<int>(0, n - 1)(rng()));
        x[size_t(want)] = 100.0f;
        if (want + 1 < n) x[size_t(n - 1)] = 100.0f;  // a tie later in the array
        Guarded<float> dx(x);
        Guarded<int> out(1);
        gpu::argmax(dx.ptr(), n, out.ptr(), launch());
        CHECK(out.check()[0] == want);
    }
}

TEST_CASE("gpu: argmax flags NaN, +inf and an all -inf input, as the CPU Sampler refuses them") {
    const int n = 3000;
    for (float poison : {NAN, INFINITY}) {
        std::vector<float> x = randn(n);
        x[1234] = poison;
        Guarded<float> dx(x);
        Guarded<int> out(1);
        gpu::argmax(dx.ptr(), n, out.ptr(), launch());
        CHECK(out.check()[0] == gpu::ARGMAX_NOT_FINITE);
    }
    Guarded<float> dx(std::vector<float>(size_t(n), -INFINITY));
    Guarded<int> out(1);
    gpu::argmax(dx.ptr(), n, out.ptr(), launch());
    CHECK(out.check()[0] == gpu::ARGMAX_ALL_NEG_INF);
}

// The fast filtered path must draw what the CPU Sampler draws (same seed, same uniform) and hand over to the
// full path exactly when it must: more than SAMPLE_CAP candidates, fewer than top_k, or (top-p alone) less
// than top_p of the mass in them. The device's expf is not the host's (a few ulp apart), so a verdict is only
// checked where no probability sits within 1e-5 of a threshold, and draws must agree at a high rate (a draw
// can only part where u falls within ~1e-6 of a boundary between two tokens).
TEST_CASE("gpu: sample_candidates draws as the CPU Sampler does, or hands over to the full path") {
    const int n = 151936;  // the Qwen vocabulary
    struct Dist {
        const char* name;
        float scale;  // logits ~ N(0, scale)
        int spikes;   // this many tokens lifted (by 12, or by 8 over a flat floor)
    };
    // peaked and spiky: tens to hundreds of candidates; flat: every token is one (overflow); a lone spike 8 over a
    // flat floor: at temperature 1 a floor token has e = 3.4e-4 < 1/1024, so the spike is the only candidate and
    // holds 2 % of the mass
    std::map<std::string, int> outcomes;
    int drawn = 0, agreed = 0, verdicts = 0, borderline = 0;
    for (Dist d : {Dist{"peaked", 5.0f, 0}, Dist{"spiky", 1.0f, 40}, Dist{"flat", 0.01f, 0},
                   Dist{"spike over a floor", 0.0f, 1}}) {
        std::string name = d.name;
        CAPTURE(name);
        std::vector<float> logits = randn(size_t(n), d.scale);
        for (int i = 0; i < d.spikes; i++) logits[size_t(i) * 997] += d.scale > 0 ? 12.0f : 8.0f;
        Guarded<float> dl(logits), cand_e(gpu::SAMPLE_CAP);
        Guarded<int> am(1), cand_id(gpu::SAMPLE_CAP), out(1);
        Guarded<gpu::Candidates> c(1);
        gpu::argmax(dl.ptr(), n, am.ptr(), launch());
        struct F {
            float temp, top_p, min_p;
            int top_k;
        };
        for (F fp : {F{1.0f, 0.9f, 0, 0}, F{0.7f, 0.8f, 0, 20}, F{1.3f, 1.0f, 0.05f, 0}, F{1.0f, 0.95f, 0.01f, 0},
                     F{1.0f, 1.0f, 0, 1000}, F{0.5f, 0.5f, 0, 0}}) {
            CAPTURE(fp.temp);
            CAPTURE(fp.top_p);
            CAPTURE(fp.min_p);
            CAPTURE(fp.top_k);
            // the expected verdict, from the Sampler's own arithmetic on the host, and whether it is clear
            float m = *std::max_element(logits.begin(), logits.end()), e_min = 0.999f * (fp.min_p > 0 ? fp.min_p : 1.0f / 1024);
            auto near = [](double a, double b) { return std::abs(a - b) <= 1e-5 * std::abs(b); };
            std::vector<float> e(logits.size());
            double total = 0;
            int n_sup = 0;
            bool close = false;
            for (size_t i = 0; i < e.size(); i++) {
                e[i] = std::exp((logits[i] - m) / fp.temp);
                total += e[i];
                n_sup += e[i] >= e_min;
                close |= near(e[i], e_min);
            }
            float inv = float(1.0 / total), cutoff = fp.min_p > 0 ? fp.min_p * inv : inv / 1024.0f;
            int kept = 0;
            double mass = 0;
            for (float x : e) {
                if (x * inv >= cutoff) kept++, mass += x * inv;
                close |= near(double(x) * inv, cutoff);
            }
            bool fallback = n_sup > gpu::SAMPLE_CAP || (fp.top_k > 0 && kept < fp.top_k) ||
                            (fp.top_k == 0 && fp.min_p == 0 && mass < fp.top_p);
            close |= fp.top_k == 0 && fp.min_p == 0 && near(mass, fp.top_p);
            SamplingParams sp;
            sp.temperature = fp.temp, sp.top_p = fp.top_p, sp.min_p = fp.min_p, sp.top_k = fp.top_k, sp.seed = 7;
            Sampler dev(sp), cpu(sp);
            for (int draw = 0; draw < 5; draw++) {
                gpu::SampleFilter f;
                f.top_k = fp.top_k, f.top_p = fp.top_p, f.min_p = fp.min_p, f.u = dev.rng.uniform();
                gpu::sample_candidates(dl.ptr(), n, am.ptr(), fp.temp, f, cand_e.ptr(), cand_id.ptr(), c.ptr(),
                                       out.ptr(), launch());
                int got = out.check()[0];
                std::vector<float> host = logits;
                int want = cpu.sample(host.data(), n, {}, 0);
                if (close) {
                    borderline++;
                    continue;
                }
                verdicts++;
                CHECK((got == gpu::SAMPLE_FALLBACK) == fallback);
                if (got != gpu::SAMPLE_FALLBACK && !fallback) drawn++, agreed += got == want;
            }
            outcomes[!fallback ? "drawn" : n_sup > gpu::SAMPLE_CAP ? "overflow" : fp.top_k ? "short of k" : "mass"]++;
        }
        cand_e.check(), cand_id.check(), c.check();
    }
    MESSAGE("sample_candidates: ", agreed, " of ", drawn, " draws as the CPU Sampler's; ", borderline,
            " calls with a probability at a threshold not judged");
    CHECK(verdicts >= 100);                          // of 120: the distributions are made to stay off the thresholds
    CHECK(drawn >= 40);
    CHECK(agreed >= drawn - std::max(1, drawn / 20));  // >= 95 %
    for (const char* o : {"drawn", "overflow", "short of k", "mass"}) {
        CAPTURE(o);
        CHECK(outcomes[o] > 0);  // every branch was taken
    }
}

TEST_CASE("gpu: select_token keeps to the top-k / top-p / min-p sets") {
    int n = 5000;
    std::vector<float> logits = randn(size_t(n), 3.0f);
    Guarded<float> dl(logits), p(n), ps(n);
    Guarded<int> ids(n), ids_sorted(n), out(1);
    std::vector<int> iota(n);
    for (int i = 0; i < n; i++) iota[size_t(i)] = i;
    ids.upload(iota);
    gpu::softmax(dl.ptr(), n, 1.0f, p.ptr(), launch());
    size_t tmp_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, tmp_bytes, p.ptr(), ps.ptr(), ids.ptr(),
                                                         ids_sorted.ptr(), n));
    void* tmp = nullptr;
    CUDA_CHECK(cudaMalloc(&tmp, tmp_bytes));
    CUDA_CHECK(
        cub::DeviceRadixSort::SortPairsDescending(tmp, tmp_bytes, p.ptr(), ps.ptr(), ids.ptr(), ids_sorted.ptr(), n));
    std::vector<float> probs = p.check();
    CHECK(std::abs(std::accumulate(probs.begin(), probs.end(), 0.0) - 1.0) < 1e-5);
    std::vector<int> order = ids_sorted.check();
    for (int i = 0; i + 1 < n; i++) REQUIRE(probs[size_t(order[size_t(i)])] >= probs[size_t(order[size_t(i + 1)])]);
    // the top-p set of 0.5: the shortest prefix of `order` holding half the mass
    size_t n_top_p = 0;
    for (double before = 0; before < 0.5; n_top_p++) before += probs[size_t(order[n_top_p])];
    std::uniform_real_distribution<float> u01(0.0f, 1.0f);
    for (int trial = 0; trial < 200; trial++) {
        gpu::SampleFilter f;
        f.u = u01(rng());
        f.top_k = 10;
        gpu::select_token(ps.ptr(), ids_sorted.ptr(), n, f, out.ptr(), launch());
        int id = out.check()[0];
        CHECK(std::find(order.begin(), order.begin() + 10, id) != order.begin() + 10);
        f.top_k = 0;
        f.top_p = 0.5f;
        gpu::select_token(ps.ptr(), ids_sorted.ptr(), n, f, out.ptr(), launch());
        id = out.check()[0];
        CHECK(std::find(order.begin(), order.begin() + long(n_top_p), id) != order.begin() + long(n_top_p));
        f.top_p = 1.0f;
        f.min_p = 0.2f;
        gpu::select_token(ps.ptr(), ids_sorted.ptr(), n, f, out.ptr(), launch());
        id = out.check()[0];
        CHECK(probs[size_t(id)] >= 0.2f * probs[size_t(order[0])]);
    }
    cudaFree(tmp);
}

// ============================================================================
// The engine end to end on the tiny fixtures
// ============================================================================

namespace {

std::vector<float> row(const float* p, int n) { return std::vector<float>(p, p + n); }

}  // namespace

TEST_CASE("gpu engine: logits match Hugging Face; prefill, decode, graphs and the CPU engine agree") {
    for (std::string name : kFixtures) {
        CAPTURE(name);
        Model model = load_fixture(name);
        Reference ref = load_reference(name);
        const int V = model.config.vocab_size;
        GpuEngine gpu(model, 256), plain(model, 256);
        plain.set_graphs(false);
        CpuEngine cpu(model, 256);
        double worst_decode = 0, worst_prefill = 0, worst_cpu = 0, worst_graph = 0;
        for (size_t ci = 0; ci < ref.cases.size(); ci++) {
#ifdef QWEN_CUDA_EMU
            if (ci != 1 && ci != 5) continue;  // emulated: a short and a long case (all of them take minutes)
#endif
            const json& cs = ref.cases[ci];
            std::vector<int> input = cs["input_ids"], greedy = cs["greedy_ids"];
            std::vector<float> margins = cs["greedy_margins"];
            std::vector<int> ids = input;
            ids.insert(ids.end(), greedy.begin(), greedy.end());
            const int T = int(ids.size()), n_in = int(input.size());
            const float* want = &ref.logits[size_t(cs["logits_offset_bytes"]) / sizeof(float)];
            CAPTURE(cs["prompt"].get<std::string>());

            // Token by token, with and without the graph, and on the CPU.
            for (int t = 0; t < T; t++) {
                gpu.forward(&ids[size_t(t)], 1, t);
                plain.forward(&ids[size_t(t)], 1, t);
                cpu.forward(&ids[size_t(t)], 1, t);
                std::vector<float> got = row(gpu.logits(), V), ref_row = row(want + size_t(t) * V, V);
                worst_decode = std::max(worst_decode, nmse(got, ref_row));
                worst_graph = std::max(worst_graph, nmse(row(plain.logits(), V), got));
                worst_cpu = std::max(worst_cpu, nmse(got, row(cpu.logits(), V)));
                int g = t - n_in + 1;  // the greedy token these logits predict
                if (g >= 0 && g < int(greedy.size()) && margins[size_t(g)] > 0.05f)
                    CHECK(argmax(got.data(), V) == greedy[size_t(g)]);
            }
            // One prefill of the prompt, then the greedy tokens decoded after it.
            gpu.forward(input.data(), n_in, 0);
            worst_prefill = std::max(worst_prefill, nmse(row(gpu.logits(), V), row(want + size_t(n_in - 1) * V, V)));
            for (int t = n_in; t < T; t++) {
                gpu.forward(&ids[size_t(t)], 1, t);
                std::vector<float> got = row(gpu.logits(), V);
                worst_prefill = std::max(worst_prefill, nmse(got, row(want + size_t(t) * V, V)));
                int g = t - n_in + 1;
                if (g < int(greedy.size()) && margins[size_t(g)] > 0.05f)
                    CHECK(argmax(got.data(), V) == greedy[size_t(g)]);
            }
            // The whole sequence prefilled in chunks of 7 (chunk boundaries and a prefill at pos > 0).
            gpu.set_prefill_chunk(7);
            gpu.forward(ids.data(), T - 1, 0);
            worst_prefill = std::max(worst_prefill, nmse(row(gpu.logits(), V), row(want + size_t(T - 2) * V, V)));
            gpu.set_prefill_chunk(512);
        }
        MESSAGE(name, ": worst NMSE vs HF decode ", worst_decode, ", prefill ", worst_prefill, "; vs CPU ", worst_cpu,
                "; graph vs plain ", worst_graph);
        CHECK(worst_decode <= 1e-3);
        CHECK(worst_prefill <= 1e-3);
        CHECK(worst_cpu <= 1e-3);
        CHECK(worst_graph == 0.0);  // the same kernels on the same data
    }
}

TEST_CASE("gpu engine: forward checks its arguments") {
    Model model = load_fixture("tiny-qwen2");
    GpuEngine e(model, 16);
    int ok[2] = {1, 2}, bad[2] = {1, model.config.vocab_size};
    CHECK_THROWS_AS(e.forward(ok, 0, 0), Error);
    CHECK_THROWS_AS(e.forward(ok, 2, 15), Error);
    CHECK_THROWS_AS(e.forward(ok, 1, -1), Error);
    CHECK_THROWS_AS(e.forward(bad, 2, 0), Error);
    CHECK_THROWS_AS(GpuEngine(model, 0), Error);
    CHECK_THROWS_AS(GpuEngine(model, model.config.max_seq_len + 1), Error);
    e.forward(ok, 2, 14);  // the last two positions are fine
    CHECK(std::isfinite(e.logits()[0]));
}

// Greedy choices must be the CPU Sampler's exactly (no math but the penalties' IEEE products); seeded draws
// with the same uniforms at a high rate (the device's expf is a few ulp from the host's, so a draw may part
// where u falls on a boundary); and the frequencies of many device draws must fit the CPU Sampler's
// probabilities of the kept tokens (a chi-square bound).
TEST_CASE("gpu engine: on-device sampling agrees with the CPU Sampler: greedy exactly, draws at a high rate, in frequency") {
    Model model = load_fixture("tiny-qwen2");
    GpuEngine e(model, 64);
    const int V = model.config.vocab_size;
    std::vector<int> tokens = {5, 17, 17, 300, 42};
    e.forward(tokens.data(), int(tokens.size()), 0);
    int fast_draws = 0, drawn = 0, agreed = 0;
    struct P {
        float temp, top_p, min_p, rep, pres;
        int top_k;
    };
    auto params = [](const P& p) {
        SamplingParams sp;
        sp.temperature = p.temp;
        sp.top_p = p.top_p;
        sp.top_k = p.top_k;
        sp.min_p = p.min_p;
        sp.repetition_penalty = p.rep;
        sp.presence_penalty = p.pres;
        sp.seed = 99;
        return sp;
    };
    for (P p : {P{0, 1, 0, 1, 0, 0}, P{0, 1, 0, 1.3f, 0.5f, 0}, P{1.0f, 1, 0, 1, 0, 0}, P{0.7f, 0.8f, 0, 1, 0, 20},
                P{1.5f, 0.9f, 0, 1.1f, 0, 0}, P{1.0f, 1, 0.1f, 1, 0, 0}, P{2.0f, 0.95f, 0.05f, 1.2f, -0.5f, 50},
                P{0.5f, 1, 0, 1, 0, 3}, P{1.0f, 1, 0, 1e-38f, 0, 0}}) {  // the last: penalised logits clamp
        SamplingParams sp = params(p);
        bool filtered = p.temp > 0 && (p.top_k > 0 || p.top_p < 1 || p.min_p > 0);
        for (bool fast : {true, false}) {  // the fast filtered path, and the full sort
            e.set_fast_sampling(fast);
            fast_draws += fast && filtered ? 50 : 0;
            Sampler on_gpu(sp), on_cpu(sp);
            CAPTURE(p.temp);
            CAPTURE(p.top_k);
            CAPTURE(p.top_p);
            CAPTURE(fast);
            int agree = 0;
            for (int i = 0; i < 50; i++) {
                int a = e.sample(on_gpu, V, tokens, 3);
                int b = e.Engine::sample(on_cpu, V, tokens, 3);  // the base class: the CPU Sampler on host logits
                agree += a == b;
                if (p.temp == 0) CHECK(a == b);
            }
            CHECK(agree >= 45);
            if (p.temp > 0) drawn += 50, agreed += agree;
        }
    }
    MESSAGE("on-device sampling: ", agreed, " of ", drawn, " seeded draws as the CPU Sampler's");
    CHECK(agreed >= drawn - drawn / 50);  // >= 98 %
    // both paths served: the fast one most draws, the full one where the candidates were fewer than top_k
    MESSAGE("fast sampling path: ", e.sampling_fallbacks(), " of ", fast_draws, " filtered draws handed over");
    CHECK(e.sampling_fallbacks() > 0);
    CHECK(e.sampling_fallbacks() < fast_draws / 2);

    // Frequencies: K device draws against the CPU Sampler's probabilities of the kept tokens. Tokens expected
    // at least 5 times are cells of their own, the other kept tokens one cell; a token outside the kept set
    // must never be drawn. X^2 stays under df + 5 sqrt(2 df) + 5 (far in the tail for a right sampler).
    const int K = 400;
    std::vector<float> logits(e.logits(), e.logits() + V);
    for (P p : {P{2.5f, 1, 0, 1, 0, 20}, P{3.0f, 0.9f, 0, 1, 0, 0}, P{4.0f, 1, 0.2f, 1, 0, 0}}) {  // spread out
        CAPTURE(p.temp);
        CAPTURE(p.top_k);
        CAPTURE(p.top_p);
        CAPTURE(p.min_p);
        SamplingParams sp = params(p);
        Sampler host(sp), dev(sp);
        std::vector<Sampler::Candidate> kept = host.keep(logits.data(), V);
        double mass = 0;
        for (const Sampler::Candidate& c : kept) mass += c.p;
        std::map<int, int> cell;  // token -> its cell; cell 0 pools the rare kept tokens
        std::vector<double> expect(1, 0.0);
        for (const Sampler::Candidate& c : kept) {
            double ex = K * c.p / mass;
            if (ex >= 5) cell[c.id] = int(expect.size()), expect.push_back(ex);
            else cell[c.id] = 0, expect[0] += ex;
        }
        std::vector<int> seen(expect.size(), 0);
        e.set_fast_sampling(true);
        for (int i = 0; i < K; i++) {
            int id = e.sample(dev, V, tokens, 3);
            REQUIRE(cell.count(id) == 1);  // a kept token
            seen[size_t(cell[id])]++;
        }
        double x2 = 0;
        int cells = 0;
        for (size_t j = 0; j < expect.size(); j++)
            if (expect[j] > 0) x2 += (seen[j] - expect[j]) * (seen[j] - expect[j]) / expect[j], cells++;
        double df = std::max(1, cells - 1);
        MESSAGE("on-device draws vs the CPU Sampler's probabilities: X^2 = ", x2, " over ", df, " degrees of freedom (",
                kept.size(), " tokens kept)");
        CHECK(cells >= 3);
        CHECK(x2 <= df + 5 * std::sqrt(2 * df) + 5);
    }
}

TEST_CASE("gpu engine: synthetic weights give finite logits, the same with and without the graph") {
    // dim / ffn_dim 128 / 344: rows of 16-byte chunks; 100 / 172: rows of any length (the scalar matvec path)
    for (int dim : {128, 100}) {
        CAPTURE(dim);
        Config c;
        c.arch = ARCH_QWEN2;
        c.dim = dim, c.ffn_dim = dim == 128 ? 344 : 172, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
        c.head_dim = 32, c.vocab_size = 1000, c.max_seq_len = 128, c.rope_theta = 10000, c.norm_eps = 1e-6f;
        c.tied = false, c.qkv_bias = true;
        std::unique_ptr<GpuEngine> a = GpuEngine::synthetic(c, 64, 7), b = GpuEngine::synthetic(c, 64, 7);
        b->set_graphs(false);
        std::vector<int> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
        a->forward(ids.data(), 10, 0);
        b->forward(ids.data(), 10, 0);
        std::vector<float> la;
        for (int t = 10; t < 20; t++) {
            ids.push_back(t);
            a->forward(&t, 1, t);
            b->forward(&t, 1, t);
            la = row(a->logits(), c.vocab_size);
            std::vector<float> lb = row(b->logits(), c.vocab_size);
            for (float v : la) REQUIRE(std::isfinite(v));
            CHECK(nmse(la, lb) == 0.0);
        }
        // the same 20 tokens as one prefill (bf16 GEMM inputs): close to the decoded logits
        b->forward(ids.data(), int(ids.size()), 0);
        CHECK(nmse(row(b->logits(), c.vocab_size), la) <= 1e-3);
    }
}

TEST_SUITE_END();

// Outside the GPU suite: runs with or without a device.
TEST_CASE("make_engine: the GPU when there is a usable one, else the CPU; --cpu forces the CPU") {
    Model model = load_fixture("tiny-qwen2");
    std::unique_ptr<Engine> forced = make_engine(model, 16, true, 1, false);
    CHECK(std::string(forced->name()) == "cpu");
    bool usable = gpu::device_available() && gpu::device_unsupported().empty();
    std::unique_ptr<Engine> chosen = make_engine(model, 16, false, 1, false);
    CHECK(std::string(chosen->name()) == (usable ? "cuda" : "cpu"));
    CHECK(chosen->context_size() == 16);
    std::vector<int> ids = {1, 2, 3, 4, 5};
    forced->forward(ids.data(), int(ids.size()), 0);
    chosen->forward(ids.data(), int(ids.size()), 0);
    const int V = model.config.vocab_size;
    CHECK(nmse(row(chosen->logits(), V), row(forced->logits(), V)) <= 1e-3);
}
