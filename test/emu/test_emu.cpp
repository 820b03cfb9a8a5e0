// test_emu.cpp: the CPU emulator of the GPU (cuda_emu.hpp, cuda_emu.cpp) checked on its own, since every
// emulated GPU test trusts it: thread coordinates, warp shuffles, block barriers, shared memory, launch checks,
// graph capture, copies, cuBLAS, CUB, and the faults it must raise instead of hanging.
// Kernels are plain functions here (the file is C++), launched as qwen_emu::launch(k, "k", grid, block, smem,
// stream)(args...), which is what the Makefile rewrites `k<<<grid, block, smem, stream>>>(args...)` into.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

namespace {

// A device buffer of n elements, freed on scope exit (the run checks for leaks).
template <typename T>
struct DeviceBuf {
    T* p = nullptr;
    size_t n;
    explicit DeviceBuf(size_t count) : n(count) { REQUIRE(cudaMalloc((void**)&p, n * sizeof(T)) == cudaSuccess); }
    explicit DeviceBuf(const std::vector<T>& h) : DeviceBuf(h.size()) { put(h); }
    DeviceBuf(const DeviceBuf&) = delete;
    DeviceBuf& operator=(const DeviceBuf&) = delete;
    ~DeviceBuf() { cudaFree(p); }
    void put(const std::vector<T>& h) {
        REQUIRE(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
    }
    std::vector<T> get() const {
        std::vector<T> h(n);
        REQUIRE(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
        return h;
    }
};

}  // namespace

// ============================================================================
// Thread coordinates
// ============================================================================

// Each thread stores its coordinates, packed 4 bits apiece, at its global linear id (-1 if the dims are wrong),
// and what lane 1 of its warp holds as its id in the block: warps are cut from that id, x fastest.
static __global__ void store_coords(int* out, int* lane1, dim3 grid, dim3 block) {
    bool dims_ok = gridDim.x == grid.x && gridDim.y == grid.y && gridDim.z == grid.z && blockDim.x == block.x &&
                   blockDim.y == block.y && blockDim.z == block.z;
    unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned id = b * blockDim.x * blockDim.y * blockDim.z + t;
    unsigned code = threadIdx.x | threadIdx.y << 4 | threadIdx.z << 8 | blockIdx.x << 12 | blockIdx.y << 16;
    out[id] = dims_ok ? int(code | blockIdx.z << 20) : -1;
    lane1[id] = __shfl_sync(0xffffffffu, int(t), 1);
}

TEST_CASE("emu: threadIdx, blockIdx, blockDim, gridDim cover 2-D and 3-D launches, x fastest") {
    for (auto [grid, block] : {std::pair{dim3(2, 3), dim3(16, 4)}, std::pair{dim3(3, 2, 2), dim3(4, 4, 4)}}) {
        size_t per_block = block.x * block.y * block.z, n = per_block * grid.x * grid.y * grid.z;
        DeviceBuf<int> out(std::vector<int>(n, -2)), lane1(n);
        qwen_emu::launch(store_coords, "store_coords", grid, block)(out.p, lane1.p, grid, block);
        REQUIRE(cudaGetLastError() == cudaSuccess);
        std::vector<int> got = out.get(), got1 = lane1.get();
        for (size_t i = 0; i < n; i++) {  // the test's own decomposition of the linear id, x varying fastest
            unsigned t = unsigned(i % per_block), b = unsigned(i / per_block);
            unsigned tx = t % block.x, ty = t / block.x % block.y, tz = t / (block.x * block.y);
            unsigned bx = b % grid.x, by = b / grid.x % grid.y, bz = b / (grid.x * grid.y);
            CHECK(got[i] == int(tx | ty << 4 | tz << 8 | bx << 12 | by << 16 | bz << 20));
            CHECK(got1[i] == int(t / 32 * 32 + 1));
        }
    }
}

// ============================================================================
// Warp shuffles
// ============================================================================

// Rows of 32: segment sum by xor butterfly, down by 3, up by 3, read of lane 2 * lane + 1 (wraps in its segment).
static __global__ void shuffles(int* out, int width) {
    int lane = int(threadIdx.x), v = 100 + lane * lane, s = v;
    for (int m = width / 2; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m, width);
    out[lane] = s;
    out[32 + lane] = __shfl_down_sync(0xffffffffu, v, 3, width);
    out[64 + lane] = __shfl_up_sync(0xffffffffu, v, 3, width);
    out[96 + lane] = __shfl_sync(0xffffffffu, v, 2 * lane + 1, width);
}

TEST_CASE("emu: shuffles by xor, down, up and index, over the warp and over segments of 8") {
    auto v = [](int lane) { return 100 + lane * lane; };
    for (int w : {32, 8}) {
        CAPTURE(w);
        DeviceBuf<int> out(128);
        qwen_emu::launch(shuffles, "shuffles", 1, 32)(out.p, w);
        std::vector<int> got = out.get();
        for (int lane = 0; lane < 32; lane++) {
            int seg = lane / w * w, sum = 0;
            for (int i = seg; i < seg + w; i++) sum += v(i);
            CHECK(got[size_t(lane)] == sum);
            // a source outside the caller's segment gives the caller its own value
            CHECK(got[size_t(32 + lane)] == (lane + 3 < seg + w ? v(lane + 3) : v(lane)));
            CHECK(got[size_t(64 + lane)] == (lane - 3 >= seg ? v(lane - 3) : v(lane)));
            CHECK(got[size_t(96 + lane)] == v(seg + (2 * lane + 1) % w));
        }
    }
}

static __global__ void xor_past_width(int* out) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 8, 8);
}

// CUDA's guide: with width < 32 a group may read earlier groups, but reading a later one returns the own value.
TEST_CASE("emu: __shfl_xor_sync with a mask past the width reads the earlier group") {
    DeviceBuf<int> out(32);
    qwen_emu::launch(xor_past_width, "xor_past_width", 1, 32)(out.p);
    std::vector<int> want(32);
    for (int lane = 0; lane < 32; lane++) want[size_t(lane)] = (lane & 8) ? lane ^ 8 : lane;
    CHECK(out.get() == want);
}

// 48 threads: one full warp and a last warp of 16 lanes, which may only exchange among its own lanes.
static __global__ void partial_warp(float* out) {
    float v = float(threadIdx.x);
    if (threadIdx.x < 32)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    else
        for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0x0000ffffu, v, o, 16);
    out[threadIdx.x] = v;
}

TEST_CASE("emu: a 48-thread block sums its full warp and, within 16 lanes, its partial one") {
    DeviceBuf<float> out(48);
    qwen_emu::launch(partial_warp, "partial_warp", 1, 48)(out.p);
    std::vector<float> got = out.get();
    for (int i = 0; i < 48; i++) CHECK(got[size_t(i)] == (i < 32 ? 496.0f : 632.0f));  // 0+..+31, 32+..+47
}

// ============================================================================
// Block barriers and shared memory
// ============================================================================

// Tree reduction in a static __shared__ array: one array serves every block (blocks run in turn).
static __global__ void block_sums(const float* in, float* out) {
    __shared__ float part[256];
    int t = int(threadIdx.x);
    part[t] = in[blockIdx.x * blockDim.x + threadIdx.x];
    __syncthreads();
    for (int s = int(blockDim.x) / 2; s > 0; s >>= 1) {
        if (t < s) part[t] += part[t + s];
        __syncthreads();  // without it a thread would read a partner's half-updated sum
    }
    if (t == 0) out[blockIdx.x] = part[0];
}

TEST_CASE("emu: a shared-memory tree reduction gives each of several blocks its own sum") {
    const int blocks = 5;
    std::vector<float> in(size_t(blocks) * 256);
    for (size_t i = 0; i < in.size(); i++) in[i] = float(i % 7 + i / 256 * 1000);  // integers: exact sums
    DeviceBuf<float> d_in(in), d_out(blocks);
    qwen_emu::launch(block_sums, "block_sums", blocks, 256)(d_in.p, d_out.p);
    std::vector<float> got = d_out.get();
    for (int b = 0; b < blocks; b++) {
        float want = 0;
        for (int i = 0; i < 256; i++) want += in[size_t(b) * 256 + size_t(i)];
        CHECK(got[size_t(b)] == want);
    }
}

// Two barriers in a row: the second must not see the first one's OR.
static __global__ void sync_or(int* out, int pick) {
    int first = __syncthreads_or(int(threadIdx.x) == pick);
    int second = __syncthreads_or(0);
    out[threadIdx.x] = first * 2 + second;
}

TEST_CASE("emu: __syncthreads_or returns the block's OR to every thread") {
    DeviceBuf<int> out(96);
    for (int pick : {37, -1}) {
        qwen_emu::launch(sync_or, "sync_or", 1, 96)(out.p, pick);
        for (int x : out.get()) CHECK(x == (pick >= 0 ? 2 : 0));
    }
}

// Each block reads its dynamic shared memory before writing it, then dirties it for the next block.
static __global__ void read_smem_first(unsigned* out, int words) {
    unsigned* s = qwen_emu::dynamic_smem<unsigned>();
    if (threadIdx.x == 0)
        for (int i = 0; i < words; i++) out[blockIdx.x * unsigned(words) + unsigned(i)] = s[i];
    __syncthreads();
    s[threadIdx.x] = 0;
}

TEST_CASE("emu: dynamic shared memory starts as NaN bytes in every block") {
    DeviceBuf<unsigned> out(2 * 64);
    qwen_emu::launch(read_smem_first, "read_smem_first", 2, 64, 64 * sizeof(unsigned))(out.p, 64);
    for (unsigned u : out.get()) {
        CHECK(u == 0xffffffffu);
        CHECK(std::isnan(__uint_as_float(u)));  // so a float read before a write poisons what it feeds
    }
}

static __global__ void big_smem(int* ran) {
    qwen_emu::dynamic_smem<char>()[(64 << 10) - 1] = 1;
    *ran = 1;
}

TEST_CASE("emu: more than 48 KB of dynamic shared memory needs the opt-in attribute") {
    DeviceBuf<int> ran(std::vector<int>{0});
    qwen_emu::launch(big_smem, "big_smem", 1, 1, 64 << 10)(ran.p);
    CHECK(cudaGetLastError() != cudaSuccess);
    CHECK(ran.get()[0] == 0);
    REQUIRE(cudaFuncSetAttribute(big_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10) == cudaSuccess);
    qwen_emu::launch(big_smem, "big_smem", 1, 1, 64 << 10)(ran.p);
    CHECK(cudaGetLastError() == cudaSuccess);
    CHECK(ran.get()[0] == 1);
    cudaFuncSetAttribute(big_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, 48 << 10);  // as it was
}

// ============================================================================
// Launch checks, copies and graph capture
// ============================================================================

static __global__ void mark_ran(int* ran) { *ran = 1; }

TEST_CASE("emu: a bad launch shape sets an error once and does not run") {
    DeviceBuf<int> ran(std::vector<int>{0});
    for (auto [grid, block] : {std::pair{dim3(1), dim3(1025)}, std::pair{dim3(1, 70000), dim3(32)},
                               std::pair{dim3(1), dim3(0)}}) {
        qwen_emu::launch(mark_ran, "mark_ran", grid, block)(ran.p);
        CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
        CHECK(cudaGetLastError() == cudaSuccess);  // reading the error clears it
    }
    CHECK(ran.get()[0] == 0);
}

static __global__ void derive(const int* in, int* out) { out[threadIdx.x] = in[0] * 10 + int(threadIdx.x); }

TEST_CASE("emu: a captured graph does not run at capture and reads its inputs at each replay") {
    DeviceBuf<int> in(std::vector<int>{1}), out(std::vector<int>(4, -1));
    cudaStream_t s;
    REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess);
    qwen_emu::launch(derive, "derive", 1, 4, 0, s)(in.p, out.p);
    cudaGraph_t g = nullptr;
    cudaGraphExec_t exec = nullptr;
    REQUIRE(cudaStreamEndCapture(s, &g) == cudaSuccess);
    REQUIRE(cudaGraphInstantiate(&exec, g, 0) == cudaSuccess);
    cudaGraphDestroy(g);
    CHECK(out.get() == std::vector<int>(4, -1));
    for (int x : {2, 3}) {  // the graph holds the pointer, not the value it pointed at during capture
        in.put({x});
        REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
        REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
        CHECK(out.get() == std::vector<int>{x * 10, x * 10 + 1, x * 10 + 2, x * 10 + 3});
    }
    cudaGraphExecDestroy(exec);
    cudaStreamDestroy(s);
}

TEST_CASE("emu: synchronizing a capturing stream is an error and invalidates the capture") {
    cudaStream_t s;
    REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess);
    CHECK(cudaStreamSynchronize(s) != cudaSuccess);
    CHECK(cudaGetLastError() != cudaSuccess);
    cudaGraph_t g = nullptr;
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated);
    CHECK(g == nullptr);
    cudaGetLastError();
    cudaStreamDestroy(s);
}

TEST_CASE("emu: cudaMemcpy refuses pointers on the wrong side; fresh device memory is not zeroed") {
    std::vector<int> host(4, 7), host2(4, 0);
    DeviceBuf<int> d(4);
    CHECK(d.get() == std::vector<int>(4, int(0xa5a5a5a5u)));
    CHECK(cudaMemcpy(host2.data(), host.data(), 16, cudaMemcpyHostToDevice) != cudaSuccess);  // dst on the host
    CHECK(cudaMemcpy(host2.data(), host.data(), 16, cudaMemcpyDeviceToHost) != cudaSuccess);  // src on the host
    CHECK(cudaMemcpy(d.p, d.p, 16, cudaMemcpyDeviceToHost) != cudaSuccess);                   // dst on the device
    CHECK(cudaMemcpy(host2.data(), d.p, 20, cudaMemcpyDeviceToHost) != cudaSuccess);          // past the allocation
    CHECK(cudaGetLastError() != cudaSuccess);
    CHECK(host2 == std::vector<int>(4, 0));
    CHECK(cudaMemcpy(d.p, host.data(), 16, cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(d.get() == host);
}

// ============================================================================
// cuBLAS and CUB
// ============================================================================

TEST_CASE("emu: cublasGemmEx, A transposed, bf16 in, fp32 out, matches a loop; beta = 1 accumulates") {
    const int m = 5, n = 3, k = 7, ldc = m + 1;  // C padded by a row that must stay untouched
    // A as row-major weights (m rows of k), read transposed as cuBLAS sees it; B column-major (n columns of k)
    std::vector<float> a(size_t(m * k)), b(size_t(k * n));
    for (size_t i = 0; i < a.size(); i++) a[i] = float(int(i % 9) - 4) * 0.5f;  // exact in bf16 and in the sums
    for (size_t i = 0; i < b.size(); i++) b[i] = float(int(i % 5) - 2);
    auto bf16_bits = [](const std::vector<float>& v) {
        std::vector<uint16_t> o(v.size());
        for (size_t i = 0; i < v.size(); i++) o[i] = uint16_t(__float_as_uint(v[i]) >> 16);
        return o;
    };
    DeviceBuf<uint16_t> da(bf16_bits(a)), db(bf16_bits(b));
    DeviceBuf<float> dc(std::vector<float>(size_t(ldc * n), NAN));  // so a read of C with beta = 0 would show
    cublasHandle_t h;
    REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
    // C = AB, then 0.5 AB + C (the accumulation qwen uses), then AB + 2 C: 1, 1.5 and 4 times AB
    for (auto [alpha, beta, scale] : {std::tuple{1.0f, 0.0f, 1.0f}, std::tuple{0.5f, 1.0f, 1.5f},
                                      std::tuple{1.0f, 2.0f, 4.0f}}) {
        REQUIRE(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, da.p, CUDA_R_16BF, k, db.p, CUDA_R_16BF,
                             k, &beta, dc.p, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
        std::vector<float> got = dc.get();
        for (int j = 0; j < n; j++) {
            CHECK(std::isnan(got[size_t(j * ldc + m)]));
            for (int i = 0; i < m; i++) {
                float s = 0;
                for (int l = 0; l < k; l++) s += a[size_t(i * k + l)] * b[size_t(j * k + l)];
                CHECK(got[size_t(j * ldc + i)] == scale * s);
            }
        }
    }
    cublasDestroy(h);
}

static __global__ void cub_block(float* reduced, int* scanned, int* total) {
    __shared__ typename cub::BlockReduce<float, 128>::TempStorage rtmp;
    __shared__ typename cub::BlockScan<int, 128>::TempStorage stmp;
    int t = int(threadIdx.x);
    reduced[t] = cub::BlockReduce<float, 128>(rtmp).Sum(float(t));
    int tot = 0;
    cub::BlockScan<int, 128>(stmp).InclusiveSum(t + 1, scanned[t], tot);
    total[t] = tot;
}

TEST_CASE("emu: cub BlockReduce sums into thread 0 only; BlockScan gives prefix sums and the total") {
    DeviceBuf<float> reduced(128);
    DeviceBuf<int> scanned(128), total(128);
    qwen_emu::launch(cub_block, "cub_block", 1, 128)(reduced.p, scanned.p, total.p);
    std::vector<float> r = reduced.get();
    CHECK(r[0] == 8128.0f);                                          // 0 + .. + 127
    for (int t = 1; t < 128; t++) CHECK(std::isnan(r[size_t(t)]));  // undefined in CUB: poisoned here
    std::vector<int> want(128);
    for (int t = 0; t < 128; t++) want[size_t(t)] = (t + 1) * (t + 2) / 2;
    CHECK(scanned.get() == want);
    CHECK(total.get() == std::vector<int>(128, 128 * 129 / 2));
}

TEST_CASE("emu: cub DeviceRadixSort::SortPairsDescending reports its scratch and sorts stably") {
    // 60 keys from 6 values, so that ties are many and a sort that is not stable would reorder them
    const float levels[6] = {1.0f, 0.5f, 0.25f, 0.0f, -0.0f, -1.0f};  // descending in CUB's order: +0 above -0
    const int n = 60;
    std::vector<float> keys(n);
    std::vector<int> ids(n), want_ids;
    for (int i = 0; i < n; i++) {
        keys[size_t(i)] = levels[(i * 7 + i / 13) % 6];
        ids[size_t(i)] = i;
    }
    for (float v : levels)  // the expected order: by level, and within a level by id
        for (int i = 0; i < n; i++)
            if (__float_as_uint(keys[size_t(i)]) == __float_as_uint(v)) want_ids.push_back(i);
    DeviceBuf<float> k_in(keys), k_out(keys.size());
    DeviceBuf<int> v_in(ids), v_out(ids.size());
    size_t bytes = 0;
    auto sort = [&](void* tmp) {
        return cub::DeviceRadixSort::SortPairsDescending(tmp, bytes, k_in.p, k_out.p, v_in.p, v_out.p, n);
    };
    REQUIRE(sort(nullptr) == cudaSuccess);  // only reports the scratch it needs
    REQUIRE(bytes > 0);
    DeviceBuf<char> tmp(bytes);
    REQUIRE(sort(tmp.p) == cudaSuccess);
    CHECK(v_out.get() == want_ids);
    std::vector<float> got = k_out.get();
    for (int i = 0; i < n; i++)  // bit for bit, as -0 == +0 in a float compare
        CHECK(__float_as_uint(got[size_t(i)]) == __float_as_uint(keys[size_t(want_ids[size_t(i)])]));
}

// ============================================================================
// Faults: a barrier that can never open must abort with the kernel's name, not hang
// ============================================================================

namespace {

struct ChildResult {
    bool aborted;     // died of SIGABRT
    std::string out;  // what it wrote to stdout and stderr
};

// A fault aborts the whole process, so `body` runs in a forked child whose output goes to a temporary file. The
// child leaves by _exit: a body that does not fault returns neither into doctest nor through the leak check.
template <typename F>
ChildResult run_in_child(F body) {
    FILE* log = tmpfile();
    REQUIRE(log);
    fflush(nullptr);  // or the child would print our buffered output a second time
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);  // doctest's crash handler would report the abort as a failed test
        dup2(fileno(log), STDOUT_FILENO);
        dup2(fileno(log), STDERR_FILENO);
        body();
        _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    std::string out(4096, '\0');
    rewind(log);  // the child wrote through the same open file, so its offset moved: read from the start
    out.resize(fread(&out[0], 1, out.size(), log));
    fclose(log);
    return {WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, out};
}

}  // namespace

// Threads 0-15 wait at a barrier that threads 16-63 never reach.
static __global__ void divergent_barrier(int* out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1;
}

// Threads 16-63 exit while 0-15 wait: the hardware may hang or go on; the emulator says so.
TEST_CASE("emu: __syncthreads in divergent code aborts with \"deadlock\"") {
    DeviceBuf<int> out(64);
    ChildResult r = run_in_child([&] { qwen_emu::launch(divergent_barrier, "divergent_barrier", 1, 64)(out.p); });
    CHECK(r.aborted);
    CHECK(r.out.find("deadlock") != std::string::npos);
    CHECK(r.out.find("divergent_barrier") != std::string::npos);
}

// Every thread reaches a __syncthreads, but not the same one.
static __global__ void two_barriers(int* out) {
    if (threadIdx.x < 16) __syncthreads();
    else __syncthreads();
    out[threadIdx.x] = 1;
}

TEST_CASE("emu: threads meeting at different __syncthreads abort with \"deadlock\"") {
    DeviceBuf<int> out(64);
    ChildResult r = run_in_child([&] { qwen_emu::launch(two_barriers, "two_barriers", 1, 64)(out.p); });
    CHECK(r.aborted);
    CHECK(r.out.find("different __syncthreads") != std::string::npos);
    CHECK(r.out.find("two_barriers") != std::string::npos);
}

// The odd lanes have left, so the even lanes' shuffle can never complete.
static __global__ void shuffle_after_exit(float* out) {
    if (threadIdx.x % 2) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 2);
}

TEST_CASE("emu: a shuffle after some lanes returned aborts with \"deadlock\" and the kernel's name") {
    DeviceBuf<float> out(32);
    ChildResult r = run_in_child([&] { qwen_emu::launch(shuffle_after_exit, "shuffle_after_exit", 1, 32)(out.p); });
    CHECK(r.aborted);
    CHECK(r.out.find("deadlock") != std::string::npos);
    CHECK(r.out.find("shuffle_after_exit") != std::string::npos);
}
