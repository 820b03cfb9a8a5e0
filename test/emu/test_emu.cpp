// test_emu.cpp: the CPU emulator of the GPU (cuda_emu.hpp, cuda_emu.cpp) checked on its own, since every
// emulated GPU test trusts it: thread coordinates, warp shuffles, block barriers, shared memory and its poison,
// the race checks and the schedule comparison (each shown failing on a small mutant of a qwen.cuh kernel),
// the device math, launch checks, graph capture, copies, cuBLAS, CUB, and the faults it must raise instead
// of hanging. The file goes through the Makefile's rewrite (its `__shared__` declarations); kernels are
// launched as qwen_emu::launch(k, "k", grid, block, smem, stream)(args...), which is what the rewrite makes of
// `k<<<grid, block, smem, stream>>>(args...)`.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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

// Emulator settings for one scope (the schedules, preemption, race checks), restored on exit.
struct Settings {
    qwen_emu::Options saved = qwen_emu::options();
    explicit Settings(int schedules, int schedule = -1, unsigned preempt = 64, int races = 1) {
        qwen_emu::Options& o = qwen_emu::options();
        o.schedules = schedules, o.schedule = schedule, o.preempt = preempt, o.races = races;
    }
    Settings(const Settings&) = delete;
    Settings& operator=(const Settings&) = delete;
    ~Settings() { qwen_emu::options() = saved; }
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

// Tree reduction in a static __shared__ array, each block its own.
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

// Each block reads its static __shared__ array before writing it, then dirties it for the next block.
static __global__ void read_static_first(unsigned* out) {
    __shared__ unsigned s[64];
    if (threadIdx.x == 0)
        for (int i = 0; i < 64; i++) out[blockIdx.x * 64 + unsigned(i)] = s[i];
    __syncthreads();
    s[threadIdx.x] = blockIdx.x;
}

TEST_CASE("emu: static __shared__ memory starts as NaN bytes in every block, whatever the block before wrote") {
    DeviceBuf<unsigned> out(3 * 64);
    for (int schedule : {0, 1, 2}) {  // blocks in order, reversed, shuffled
        Settings s(1, schedule);
        qwen_emu::launch(read_static_first, "read_static_first", 3, 64)(out.p);
        for (unsigned u : out.get()) CHECK(u == 0xffffffffu);
    }
}

TEST_CASE("emu: fresh device memory is NaN as fp32 and as bf16, -1 as integers") {
    DeviceBuf<float> f(4);
    DeviceBuf<uint16_t> h(4);
    DeviceBuf<int> i(4);
    for (float x : f.get()) CHECK(std::isnan(x));
    for (uint16_t b : h.get()) CHECK(std::isnan(__uint_as_float(uint32_t(b) << 16)));  // bf16 is fp32's top half
    CHECK(i.get() == std::vector<int>(4, -1));
}

// ============================================================================
// Races: caught on every schedule, each shown on a small mutant of a qwen.cuh kernel
// ============================================================================

namespace {

struct ChildResult {
    bool aborted;     // died of SIGABRT
    int exit_code;    // or exited with this (-1: killed otherwise)
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
    std::string out(16384, '\0');
    rewind(log);  // the child wrote through the same open file, so its offset moved: read from the start
    out.resize(fread(&out[0], 1, out.size(), log));
    fclose(log);
    return {WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

}  // namespace

// The candidate pass of qwen.cuh's fast sampling, reduced: every x[i] >= threshold is appended to a list. The
// slot must come from an atomicAdd; the mutant takes it with a plain c->count++ (two threads may get one slot).
struct Appended {
    int count;
    float x[256];
    int id[256];
};
template <bool ATOMIC>
static __global__ void append_above(const float* x, int n, float threshold, Appended* c) {
    for (int i = int(blockIdx.x * blockDim.x + threadIdx.x); i < n; i += int(gridDim.x * blockDim.x))
        if (x[i] >= threshold) {
            int k = ATOMIC ? atomicAdd(&c->count, 1) : c->count++;
            if (k < 256) c->x[k] = x[i], c->id[k] = i;
        }
}

std::vector<float> ramp(int n) {  // 0, 1/n, 2/n, ... in a scrambled order
    std::vector<float> x(size_t(n), 0.0f);
    for (int i = 0; i < n; i++) x[size_t(i)] = float((i * 37) % n) / float(n);
    return x;
}

TEST_CASE("emu: an atomic append runs clean on every schedule; the mutant with a plain count++ is a data race") {
    const int n = 4096;
    std::vector<float> x = ramp(n);
    DeviceBuf<float> dx(x);
    DeviceBuf<Appended> c(1);
    std::vector<int> want;
    for (int i = 0; i < n; i++)
        if (x[size_t(i)] >= 0.97f) want.push_back(i);
    for (int schedules : {1, 3}) {  // 3: three runs per launch, compared (the later ones get the first's slots)
        Settings s(schedules, -1, 4);
        for (int launch = 0; launch < 3; launch++) {  // the schedules take turns
            REQUIRE(cudaMemsetAsync(&c.p->count, 0, sizeof(int), nullptr) == cudaSuccess);
            qwen_emu::launch(append_above<true>, "append_above<true>", 8, 128)(dx.p, n, 0.97f, c.p);
            Appended got = c.get()[0];
            REQUIRE(got.count == int(want.size()));
            std::vector<int> ids(got.id, got.id + got.count);
            std::sort(ids.begin(), ids.end());
            CHECK(ids == want);
        }
    }
    for (int schedule : {0, 1, 2}) {
        CAPTURE(schedule);
        REQUIRE(cudaMemsetAsync(&c.p->count, 0, sizeof(int), nullptr) == cudaSuccess);
        ChildResult r = run_in_child([&] {
            Settings s(1, schedule);
            qwen_emu::launch(append_above<false>, "append_above<false>", 8, 128)(dx.p, n, 0.97f, c.p);
        });
        CHECK(r.aborted);
        CHECK(has(r.out, "append_above<false>"));
        CHECK(has(r.out, "data race"));
        CHECK(has(r.out, "byte 0 of a device allocation"));  // count, the struct's first field
    }
}

// The selection kernel's set-up, reduced: thread 0 adds up the per-block sums of the candidate pass into a
// __shared__ total that every thread then reads. The mutant drops the __syncthreads between.
template <bool BARRIER>
static __global__ void normalise(const double* part, int n_parts, const float* e, float* p, int n) {
    __shared__ double total;
    if (threadIdx.x == 0) {
        double t = 0;
        for (int b = 0; b < n_parts; b++) t += part[b];
        total = t;
    }
    if (BARRIER) __syncthreads();
    float inv = float(1.0 / total);
    for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) p[i] = e[i] * inv;
}

TEST_CASE("emu: thread 0's set-up then a barrier runs clean; the mutant without the barrier is a data race") {
    std::vector<double> part = {1.0, 2.0, 5.0};
    std::vector<float> e = {8.0f, 4.0f, 2.0f, 1.0f};
    DeviceBuf<double> dpart(part);
    DeviceBuf<float> de(e), p(4);
    for (int schedule : {0, 1, 2}) {
        Settings s(1, schedule);
        qwen_emu::launch(normalise<true>, "normalise<true>", 1, 256)(dpart.p, 3, de.p, p.p, 4);
        CHECK(p.get() == std::vector<float>{1.0f, 0.5f, 0.25f, 0.125f});
    }
    for (int schedule : {0, 1, 2}) {  // thread 0 first, last, or anywhere: the race is reported all the same
        CAPTURE(schedule);
        ChildResult r = run_in_child([&] {
            Settings s(1, schedule);
            qwen_emu::launch(normalise<false>, "normalise<false>", 1, 256)(dpart.p, 3, de.p, p.p, 4);
        });
        CHECK(r.aborted);
        CHECK(has(r.out, "normalise<false>"));
        CHECK(has(r.out, "data race"));
        CHECK(has(r.out, "__shared__ total"));
        CHECK(has(r.out, "no __syncthreads or __syncwarp between them"));
    }
}

// An inter-block race: each block adds its partial sum into *out with a plain +=, as if blocks ran one after
// another (they may overlap: updates are lost). The fix is an atomicAdd.
template <bool ATOMIC>
static __global__ void sum_into(const float* x, int n, float* out) {
    __shared__ float part[128];
    int t = int(threadIdx.x), i = int(blockIdx.x * blockDim.x) + t;
    part[t] = i < n ? x[i] : 0.0f;
    __syncthreads();
    if (t == 0) {
        float s = 0;
        for (int k = 0; k < int(blockDim.x); k++) s += part[k];
        if (ATOMIC) atomicAdd(out, s);
        else *out += s;
    }
}

TEST_CASE("emu: blocks adding into one word with atomicAdd run clean; with a plain += it is a race between blocks") {
    std::vector<float> x(1024, 0.0f);
    for (size_t i = 0; i < x.size(); i++) x[i] = float(i % 16);  // integers: every order gives the same sum
    DeviceBuf<float> dx(x), out(1);
    for (int schedules : {1, 2}) {
        Settings s(schedules);
        out.put({0.0f});
        qwen_emu::launch(sum_into<true>, "sum_into<true>", 8, 128)(dx.p, 1024, out.p);
        CHECK(out.get()[0] == 7680.0f);
    }
    out.put({0.0f});
    ChildResult r = run_in_child([&] { qwen_emu::launch(sum_into<false>, "sum_into<false>", 8, 128)(dx.p, 1024, out.p); });
    CHECK(r.aborted);
    CHECK(has(r.out, "sum_into<false>"));
    CHECK(has(r.out, "data race"));
    CHECK(has(r.out, "blocks of one launch run concurrently"));
    // Not a race, but the sum's rounding depends on the order of the atomics: several runs tell. Block 0 adds
    // 1e8, the others 3 each: lost after 1e8 (half its ulp is 4), not before it.
    for (size_t i = 0; i < x.size(); i++) x[i] = i == 0 ? 1e8f : i < 128 ? 0.0f : 3.0f / 128;
    dx.put(x);
    out.put({0.0f});
    r = run_in_child([&] {
        Settings s(2, 1);  // in order, then reversed
        qwen_emu::launch(sum_into<true>, "sum_into<true>", 8, 128)(dx.p, 1024, out.p);
    });
    CHECK(r.aborted);
    CHECK(has(r.out, "sum_into<true>: its result depends on the schedule"));
}

// Lanes publish through shared memory: only a __syncwarp orders their accesses, a shuffle does not.
template <bool SYNCWARP>
static __global__ void warp_publish(float* out) {
    __shared__ float v[32];
    int lane = int(threadIdx.x);
    v[lane] = float(lane);
    if (SYNCWARP) __syncwarp();
    else (void)__shfl_sync(0xffffffffu, lane, 0);
    out[lane] = v[(lane + 1) % 32];
}

TEST_CASE("emu: __syncwarp orders the lanes' shared-memory accesses; a shuffle in its place is a data race") {
    DeviceBuf<float> out(32);
    qwen_emu::launch(warp_publish<true>, "warp_publish<true>", 1, 32)(out.p);
    std::vector<float> got = out.get();
    for (int lane = 0; lane < 32; lane++) CHECK(got[size_t(lane)] == float((lane + 1) % 32));
    ChildResult r = run_in_child([&] { qwen_emu::launch(warp_publish<false>, "warp_publish<false>", 1, 32)(out.p); });
    CHECK(r.aborted);
    CHECK(has(r.out, "warp_publish<false>"));
    CHECK(has(r.out, "data race"));
}

// Reading a counter while other threads still add to it atomically is a race; after a barrier it is not.
template <bool BARRIER>
static __global__ void count_then_read(int* seen) {
    __shared__ int c;
    if (threadIdx.x == 0) c = 0;
    __syncthreads();
    atomicAdd(&c, 1);
    if (BARRIER) __syncthreads();
    seen[threadIdx.x] = c;
}

TEST_CASE("emu: a plain read of an atomic counter needs a barrier after the atomics") {
    DeviceBuf<int> seen(64);
    qwen_emu::launch(count_then_read<true>, "count_then_read<true>", 1, 64)(seen.p);
    CHECK(seen.get() == std::vector<int>(64, 64));
    ChildResult r = run_in_child([&] { qwen_emu::launch(count_then_read<false>, "count_then_read<false>", 1, 64)(seen.p); });
    CHECK(r.aborted);
    CHECK(has(r.out, "data race"));
    CHECK(has(r.out, "atomically"));
}

// ============================================================================
// Schedules: block and thread orders vary, and with several runs per launch their results are compared
// ============================================================================

// Thread 0 of each block, and every thread of block 0, take a ticket when they start.
static __global__ void take_tickets(int* counters, int* block_ticket, int* thread_ticket) {
    if (threadIdx.x == 0) block_ticket[blockIdx.x] = atomicAdd(&counters[0], 1);
    if (blockIdx.x == 0) thread_ticket[threadIdx.x] = atomicAdd(&counters[1], 1);
}

TEST_CASE("emu: blocks and threads run in order, reversed or shuffled, as the schedule says") {
    const int nb = 16, nt = 64;
    DeviceBuf<int> counters(2), blocks(nb), threads(nt);
    std::vector<int> iota(nb), iota_t(nt);
    for (int i = 0; i < nb; i++) iota[size_t(i)] = i;
    for (int i = 0; i < nt; i++) iota_t[size_t(i)] = i;
    for (int schedule : {0, 1, 2}) {
        CAPTURE(schedule);
        Settings s(1, schedule, 0);  // no preemption: the tickets show the order threads start in
        counters.put({0, 0});
        qwen_emu::launch(take_tickets, "take_tickets", nb, nt)(counters.p, blocks.p, threads.p);
        std::vector<int> b = blocks.get(), t = threads.get();
        std::vector<int> rb(b.rbegin(), b.rend()), rt(t.rbegin(), t.rend());
        CHECK((b == iota) == (schedule == 0));  // the order the blocks started in
        CHECK((rb == iota) == (schedule == 1));
        CHECK((t == iota_t) == (schedule == 0));  // and the threads of block 0
        CHECK((rt == iota_t) == (schedule == 1));
        std::sort(b.begin(), b.end());
        CHECK(b == iota);  // each took one ticket
    }
}

// Each thread takes two tickets in a row: preempted at its atomics, threads interleave.
static __global__ void two_tickets(int* counter, int* got) {
    int a = atomicAdd(counter, 1);
    int b = atomicAdd(counter, 1);
    got[2 * threadIdx.x] = a;
    got[2 * threadIdx.x + 1] = b;
}

TEST_CASE("emu: threads are preempted at memory accesses, except in the plain schedule") {
    DeviceBuf<int> counter(1), got(2 * 64);
    for (int schedule : {0, 1, 2}) {
        CAPTURE(schedule);
        Settings s(1, schedule, 2);
        counter.put({0});
        qwen_emu::launch(two_tickets, "two_tickets", 1, 64)(counter.p, got.p);
        std::vector<int> g = got.get();
        int apart = 0;  // threads whose two tickets are not consecutive: another thread ran between
        for (int t = 0; t < 64; t++) apart += g[size_t(2 * t + 1)] != g[size_t(2 * t)] + 1;
        CHECK((apart > 0) == (schedule != 0));
    }
}

// An in-place stencil: thread i reads x[i + 1], which thread i + 1 overwrites.
static __global__ void smooth(float* x, int n) {
    int i = int(blockIdx.x * blockDim.x + threadIdx.x);
    if (i + 1 < n) x[i] = 0.5f * (x[i] + x[i + 1]);
}

TEST_CASE("emu: with several runs per launch, results that depend on the schedule abort even unseen by the race checks") {
    std::vector<float> x(256);
    for (size_t i = 0; i < x.size(); i++) x[i] = float(i * i % 17);
    DeviceBuf<float> dx(x);
    ChildResult r = run_in_child([&] {
        Settings s(2, -1, 64, 0);  // the race checks off: only the comparison of the two runs can tell
        qwen_emu::launch(smooth, "smooth", 2, 128)(dx.p, 256);
    });
    CHECK(r.aborted);
    CHECK(has(r.out, "smooth: its result depends on the schedule"));
    CHECK(!has(r.out, "data race"));
    r = run_in_child([&] {  // the same for the lost updates of the plain count++, once threads are preempted
        std::vector<float> v = ramp(4096);
        DeviceBuf<float> dv(v);
        DeviceBuf<Appended> c(1);
        REQUIRE(cudaMemsetAsync(&c.p->count, 0, sizeof(int), nullptr) == cudaSuccess);
        Settings s(2, -1, 1, 0);
        qwen_emu::launch(append_above<false>, "append_above<false>", 8, 128)(dv.p, 4096, 0.97f, c.p);
    });
    CHECK(r.aborted);
    CHECK(has(r.out, "append_above<false>: its result depends on the schedule"));
}

static __global__ void add_one(float* x) { x[blockIdx.x * blockDim.x + threadIdx.x] += 1.0f; }

TEST_CASE("emu: every run of a launch starts from the same memory, and the last run's result stays") {
    DeviceBuf<float> x(std::vector<float>(256, 1.0f));
    Settings s(3);
    qwen_emu::launch(add_one, "add_one", 2, 128)(x.p);
    CHECK(x.get() == std::vector<float>(256, 2.0f));
}

// ============================================================================
// Device math: off the host's by a few ulp, as a fixed function of the argument
// ============================================================================

static __global__ void device_math(const float* x, float* y, int n) {
    int i = int(threadIdx.x);
    if (i >= n) return;
    float s, c;
    sincosf(x[i], &s, &c);
    y[i] = expf(x[i]);
    y[n + i] = expf(x[i]);  // the same argument again
    y[2 * n + i] = rsqrtf(x[i] + 2.0f);
    y[3 * n + i] = s;
    y[4 * n + i] = c;
    y[5 * n + i] = tanhf(x[i]);
}

TEST_CASE("emu: device expf, rsqrtf, sincosf, tanhf are within 2 ulp of the host's, not all equal to it") {
    const int n = 256;
    std::vector<float> x(n);
    for (int i = 0; i < n; i++) x[size_t(i)] = float(i - 128) / 16.0f;  // x[128] = 0
    DeviceBuf<float> dx(x), dy(6 * n);
    qwen_emu::launch(device_math, "device_math", 1, n)(dx.p, dy.p, n);
    std::vector<float> y = dy.get();
    auto ulps = [](float a, float b) { return std::abs(int64_t(__float_as_int(a)) - int64_t(__float_as_int(b))); };
    int differ = 0;
    for (int i = 0; i < n; i++) {
        float v = x[size_t(i)];
        float want[6] = {std::exp(v), std::exp(v), 1.0f / std::sqrt(v + 2.0f), std::sin(v), std::cos(v), std::tanh(v)};
        for (int k = 0; k < 6; k++) {
            float got = y[size_t(k * n + i)];
            CHECK(ulps(got, want[k]) <= 2);
            differ += got != want[k];
        }
        CHECK(y[size_t(i)] == y[size_t(n + i)]);  // one argument, one result
    }
    CHECK(y[128] == 1.0f);      // exp(0) is exact
    CHECK(y[4 * n + 128] == 1.0f);  // so is cos(0)
    CHECK(differ > n);          // about 4 in 5 results are moved
    CHECK(expf(0.5f) == std::exp(0.5f));  // on the host, outside a kernel: the host's
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

TEST_CASE("emu: cudaMemcpy refuses pointers on the wrong side") {
    std::vector<int> host(4, 7), host2(4, 0);
    DeviceBuf<int> d(4);
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

// ============================================================================
// Memory faults: device memory is not host memory, and ASan guards its edges
// ============================================================================

static __global__ void write_first(int* p) { p[0] = 1; }

TEST_CASE("emu: host code that dereferences a device pointer aborts") {
    DeviceBuf<int> d(4);
    ChildResult r = run_in_child([&] { printf("%d\n", d.p[1]); });
    CHECK(r.aborted);
    CHECK(has(r.out, "host code dereferences byte 4 of a device allocation of 16 bytes"));
}

TEST_CASE("emu: a kernel writing device memory after cudaFree is an ASan error") {
    ChildResult r = run_in_child([&] {
        int* p = nullptr;
        REQUIRE(cudaMalloc((void**)&p, 16) == cudaSuccess);
        cudaFree(p);
        qwen_emu::launch(write_first, "write_first", 1, 1)(p);
    });
    CHECK(!r.aborted);
    CHECK(r.exit_code != 0);
    CHECK(has(r.out, "AddressSanitizer"));
}

static __global__ void past_shared(float* out) {
    __shared__ float a[32];
    float* p = a;  // through a pointer, past UBSan's bounds check of a[]
    p[threadIdx.x] = 1.0f;  // 40 threads: 8 write past the end
    __syncthreads();
    out[threadIdx.x] = a[threadIdx.x % 32];
}

TEST_CASE("emu: a write past a static __shared__ array is an ASan error") {
    DeviceBuf<float> out(40);
    ChildResult r = run_in_child([&] { qwen_emu::launch(past_shared, "past_shared", 1, 40)(out.p); });
    CHECK(r.exit_code != 0);
    CHECK(has(r.out, "AddressSanitizer"));
}

TEST_CASE("emu: device memory never freed is reported at exit") {
    ChildResult r = run_in_child([&] {
        void* p = nullptr;
        REQUIRE(cudaMalloc(&p, 100) == cudaSuccess);
        exit(0);  // the normal exit path: static destructors run
    });
    CHECK(r.exit_code == 1);
    CHECK(has(r.out, "were never freed"));
}
