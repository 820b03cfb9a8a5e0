// Decode matvec y = W x (W bf16 (rows, cols), x and y fp32): the op that reads every weight byte once per
// token, so its speed is the memory bandwidth it reaches.
//   v1  one thread per row (qwen::gpu::matvec_ref): uncoalesced, the baseline
//   v2  one warp per row, 4-byte loads (2 bf16 per lane): coalesced, few bytes in flight
//   v3  qwen::gpu::matvec: warp per row, 16-byte loads, 4 loads in flight per lane, x staged in shared memory
//   v4  as v3 but x read through the read-only cache instead of staged: no shared memory, so occupancy is not
//       limited by long inputs (w_down: 74 KB of staged x allows only 3 blocks per SM). Not in the engine yet.
// usage: ./dev/bin/matvec [version]   (Qwen2-7B shapes; checks against the CPU, prints GB/s)
#include "common.cuh"

using qwen::bf16;
using namespace qwen::gpu;

// y[r] = sum_c W[r, c] x[c], lanes take bf16 pairs   grid (ceil(rows / 8)), block 256
static __global__ void matvec_v2_kernel(const bf16* W, const float* x, float* y, int rows, int cols) {
    int r = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;
    const uint32_t* w2 = reinterpret_cast<const uint32_t*>(W + size_t(r) * cols);
    float s = 0;
    for (int i = lane; i < cols / 2; i += 32) s += lo_bf(w2[i]) * x[2 * i] + hi_bf(w2[i]) * x[2 * i + 1];
    s = warp_sum(s);
    if (lane == 0) y[r] = s;
}

// y[r] = sum_c W[r, c] x[c], warp per row, 16-byte weight loads (4 in flight per lane), x from global memory
// through the read-only cache   grid (ceil(rows / 8)), block 256
static __global__ void __launch_bounds__(256) matvec_v4_kernel(const bf16* __restrict__ W, const float* __restrict__ x,
                                                               float* __restrict__ y, int rows, int cols) {
    int r = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x % 32, n8 = cols / 8;
    if (r >= rows) return;
    const uint4* w = reinterpret_cast<const uint4*>(W + size_t(r) * cols);
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float acc = 0;
    for (int base = lane; base < n8; base += 32 * 4) {
        uint4 wv[4];
#pragma unroll
        for (int u = 0; u < 4; u++) wv[u] = base + 32 * u < n8 ? __ldcs(w + base + 32 * u) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int i = base + 32 * u;
            if (i < n8) acc += dot8<qwen::DT_BF16>(wv[u], __ldg(x4 + 2 * i), __ldg(x4 + 2 * i + 1));
        }
    }
    acc = warp_sum(acc);
    if (lane == 0) y[r] = acc;
}

static void run(int v, const bf16* W, const float* x, float* y, int rows, int cols, const Launch& l) {
    if (v == 1) matvec_ref(W, x, y, rows, cols, l);
    if (v == 2) {
        matvec_v2_kernel<<<ceil_div(rows, 8), 256, 0, l.stream>>>(W, x, y, rows, cols);
        CUDA_CHECK(cudaGetLastError());
    }
    if (v == 3) matvec(bf16_matrix(W, rows, cols), x, y, l);
    if (v == 4) {
        matvec_v4_kernel<<<ceil_div(rows, 8), 256, 0, l.stream>>>(W, x, y, rows, cols);
        CUDA_CHECK(cudaGetLastError());
    }
}

static int body(int argc, char** argv) {
    int v = bench::version_arg(argc, argv, 4);
    Launch l = make_launch(nullptr);
    double ceiling = bench::copy_gb_s();
    printf("matvec v%d; device copy bandwidth %.0f GB/s\n", v, ceiling);
    printf("%-10s %7s %7s %9s %9s %8s %10s\n", "matrix", "rows", "cols", "MB", "us", "GB/s", "nmse");
    struct Shape {
        const char* name;
        int rows, cols;
    };
    for (Shape s : {Shape{"qkv", 4608, 3584}, Shape{"o", 3584, 3584}, Shape{"gate_up", 37888, 3584},
                    Shape{"down", 3584, 18944}, Shape{"lm_head", 152064, 3584}}) {
        size_t n = size_t(s.rows) * s.cols, bytes = n * sizeof(bf16);
        int copies = bench::copies_to_beat_l2(bytes);
        std::vector<bf16*> W;
        for (int i = 0; i < copies; i++) W.push_back(bench::random_bf16(n, 1 + i, 0.05f, l));
        std::vector<float> hx = bench::random_f32(size_t(s.cols), 7);
        float* x = bench::to_device(hx);
        float* y = nullptr;
        CUDA_CHECK(cudaMalloc(&y, s.rows * sizeof(float)));
        run(v, W[0], x, y, s.rows, s.cols, l);  // correctness on copy 0
        std::vector<bf16> hW = bench::to_host(W[0], n);
        std::vector<double> ref(size_t(s.rows));
        for (int r = 0; r < s.rows; r++) {
            double a = 0;
            for (int c = 0; c < s.cols; c++) a += double(qwen::bf16_to_f32(hW[size_t(r) * s.cols + c])) * hx[size_t(c)];
            ref[size_t(r)] = a;
        }
        double err = bench::nmse(bench::to_host(y, size_t(s.rows)), ref);
        float ms = bench::median_ms([&](int i) { run(v, W[size_t(i % copies)], x, y, s.rows, s.cols, l); });
        printf("%-10s %7d %7d %9.1f %9.1f %8.0f %10.2e%s\n", s.name, s.rows, s.cols, bytes / 1e6, ms * 1e3,
               bytes / (ms * 1e-3) / 1e9, err, err <= 1e-8 ? "" : "  FAILED");
        for (bf16* p : W) cudaFree(p);
        cudaFree(x);
        cudaFree(y);
    }
    return 0;
}

int main(int argc, char** argv) { return bench::run_main(body, argc, argv); }
