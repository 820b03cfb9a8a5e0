// Decode matvec y = W x (W bf16 (rows, cols), x and y fp32): the op that reads every weight byte once per
// token, so its speed is the memory bandwidth it reaches.
//   v1  one thread per row (qwen::gpu::matvec_ref): uncoalesced, the baseline
//   v2  one warp per row, 4-byte loads (2 bf16 per lane): coalesced, few bytes in flight
//   v3  warp per row, 16-byte loads, 4 loads in flight per lane, x staged in shared memory by every block
//       (the engine's until measured on an H200: w_down 1747 GB/s, its 74 KB of staged x allow 3 blocks per SM)
//   v4  qwen::gpu::matvec: as v3 but x read straight from global memory (L1/L2), one row per warp: no shared
//       memory, so occupancy is not limited by long inputs (H200: w_down 3365 GB/s)
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

// y[r] = sum_c W[r, c] xs[c] with x staged in shared memory by every block, rows_per_block rows per block
// (~4 waves, at most 64)   grid (ceil(rows / rows_per_block)), block 256, smem cols floats
static __global__ void __launch_bounds__(256)
    matvec_v3_kernel(const bf16* __restrict__ W, const float* __restrict__ x, float* __restrict__ y, int rows,
                     int cols, int rows_per_block) {
    extern __shared__ float4 v3_smem4[];
    float* xs = reinterpret_cast<float*>(v3_smem4);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) xs[c] = x[c];
    __syncthreads();
    int warp = threadIdx.x / 32, r_end = min(rows, (blockIdx.x + 1) * rows_per_block);
    for (int r = blockIdx.x * rows_per_block + warp; r < r_end; r += MV_WARPS) {
        const uint8_t* rr[1] = {reinterpret_cast<const uint8_t*>(W + size_t(r) * cols)};
        float d[1];
        warp_rows<qwen::DT_BF16, 1>(rr, xs, cols, d, nullptr);
        if (threadIdx.x % 32 == 0) y[r] = d[0];
    }
}

static void matvec_v3(const bf16* W, const float* x, float* y, int rows, int cols, const Launch& l) {
    size_t smem = size_t(cols) * sizeof(float);
    allow_smem(matvec_v3_kernel, smem, l, "matvec_v3");
    int rpb = matvec_rows_per_block(true, rows, l);
    matvec_v3_kernel<<<ceil_div(rows, rpb), 256, smem, l.stream>>>(W, x, y, rows, cols, rpb);
    CUDA_CHECK(cudaGetLastError());
}

static void run(int v, const bf16* W, const float* x, float* y, int rows, int cols, const Launch& l) {
    if (v == 1) matvec_ref(W, x, y, rows, cols, l);
    if (v == 2) {
        matvec_v2_kernel<<<ceil_div(rows, 8), 256, 0, l.stream>>>(W, x, y, rows, cols);
        CUDA_CHECK(cudaGetLastError());
    }
    if (v == 3) matvec_v3(W, x, y, rows, cols, l);
    if (v == 4) matvec(bf16_matrix(W, rows, cols), x, y, l);
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
