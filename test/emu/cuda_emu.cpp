// cuda_emu.cpp: the emulated device behind cuda_emu.hpp: the fiber scheduler that runs a grid, and the CUDA
// runtime and cuBLAS entry points qwen.cuh and its tests call (memory is host memory; every call is
// synchronous; graph capture records and replays).
//
// provides: the definitions declared in cuda_emu.hpp; cudaMalloc .. cudaGraphLaunch; cublasCreate ..
//           cublasGemmEx; an emulated device of 8 SMs and 227 KB of opt-in shared memory per block.
#include "cuda_emu.hpp"

#include <sys/mman.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <vector>

// ============================================================================
// Fibers: the threads of one block
// ============================================================================

// switch_stack(&from, to): pushes the callee-saved registers (System V x86-64: rbx, rbp, r12-r15), stores the
// stack pointer in *from and continues on the stack `to`, popping what was pushed there. No system call, unlike
// swapcontext, which matters at millions of switches per test run.
#if !defined(__x86_64__)
#error "the emulator's stack switch is written for x86-64"
#endif
extern "C" void qwen_emu_switch_stack(void** from, void* to);
asm(R"(
    .text
    .globl qwen_emu_switch_stack
    .type qwen_emu_switch_stack, @function
qwen_emu_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size qwen_emu_switch_stack, .-qwen_emu_switch_stack
)");

// AddressSanitizer must be told when the stack changes under it.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_SWITCH_START(fake, bottom, size) __sanitizer_start_switch_fiber(fake, bottom, size)
#define EMU_SWITCH_END(fake, bottom, size) __sanitizer_finish_switch_fiber(fake, bottom, size)
#else
#define EMU_SWITCH_START(fake, bottom, size) ((void)(fake), (void)(bottom), (void)(size))
#define EMU_SWITCH_END(fake, bottom, size) ((void)(fake), (void)(bottom), (void)(size))
#endif

namespace qwen_emu {

constexpr size_t STACK_BYTES = size_t(64) << 10;  // per emulated thread
constexpr int MAX_THREADS = 1024;
constexpr size_t SMEM_DEFAULT = size_t(48) << 10;  // dynamic shared memory without an opt-in
constexpr size_t SMEM_OPTIN = size_t(227) << 10;   // the most one block may opt in to (Hopper)
constexpr int SM_COUNT = 8;

struct Fiber {
    void* sp = nullptr;  // saved stack pointer while switched out
    char* stack = nullptr;
    void* fake_stack = nullptr;  // the sanitizer's bookkeeping across switches
    Coords c;
    int lane = 0, warp = 0;
    bool done = false;
    const unsigned* wait_gen = nullptr;  // waiting while *wait_gen == wait_val
    unsigned wait_val = 0;
};

struct Warp {
    int size = 32, arrived = 0;
    unsigned gen = 0;
    // Exchange space, two sets used in turn: a lane can only write the set of shuffle k + 2 after every lane
    // has reached shuffle k + 1, so after every lane has read shuffle k. One barrier per shuffle suffices.
    alignas(16) unsigned char slot[2][32][16];
};

struct Block {
    const char* kernel = "";
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    int alive = 0, arrived = 0, or_acc = 0, or_result = 0;
    unsigned gen = 0;
    const char* barrier_at = nullptr;  // where the threads now waiting called __syncthreads
    void* smem = nullptr;
    const Body* body = nullptr;
    void* scheduler_sp = nullptr;              // the scheduler's stack while a fiber runs
    const void* scheduler_bottom = nullptr;    // and its extent, for the sanitizer
    size_t scheduler_size = 0;
};

Fiber* g_fiber = nullptr;
Block* g_block = nullptr;
const Coords* g_coords = nullptr;

int lane_id() { return g_fiber->lane; }
void* dynamic_smem_base() { return g_block->smem; }

void fault(const char* fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g_fiber)
        fprintf(stderr, "cuda_emu: %s: block (%u,%u,%u) thread (%u,%u,%u): %s\n", g_block->kernel, g_fiber->c.block.x,
                g_fiber->c.block.y, g_fiber->c.block.z, g_fiber->c.thread.x, g_fiber->c.thread.y, g_fiber->c.thread.z,
                msg);
    else fprintf(stderr, "cuda_emu: %s\n", msg);
    abort();
}

// Fiber -> scheduler. `dying`: the fiber will not be resumed (its sanitizer state can go).
static void to_scheduler(bool dying) {
    Fiber* self = g_fiber;
    Block& b = *g_block;
    EMU_SWITCH_START(dying ? nullptr : &self->fake_stack, b.scheduler_bottom, b.scheduler_size);
    qwen_emu_switch_stack(&self->sp, b.scheduler_sp);
    EMU_SWITCH_END(self->fake_stack, &b.scheduler_bottom, &b.scheduler_size);
}

// Scheduler -> fiber f, until it waits or finishes.
static void resume(Block& b, Fiber& f) {
    void* fake = nullptr;
    g_fiber = &f;
    g_coords = &f.c;
    EMU_SWITCH_START(&fake, f.stack, STACK_BYTES);
    qwen_emu_switch_stack(&b.scheduler_sp, f.sp);
    EMU_SWITCH_END(fake, nullptr, nullptr);
}

// Back to the scheduler until the barrier generation moves on.
static void wait_for(const unsigned* gen, unsigned val) {
    g_fiber->wait_gen = gen;
    g_fiber->wait_val = val;
    to_scheduler(false);
}

static void open_block_barrier(Block& b) {
    b.arrived = 0;
    b.or_result = b.or_acc;
    b.or_acc = 0;
    b.gen++;
}

int sync_block_or(int v, const char* where) {
    Block& b = *g_block;
    unsigned gen = b.gen;
    if (b.arrived == 0) b.barrier_at = where;
    else if (strcmp(b.barrier_at, where) != 0)
        fault("deadlock: threads wait at different __syncthreads (%s and %s)", b.barrier_at, where);
    b.or_acc |= v != 0;
    if (++b.arrived == b.alive) open_block_barrier(b);  // the last to arrive opens it and runs on
    else wait_for(&b.gen, gen);
    return b.or_result;
}

void sync_warp() {
    Warp& w = g_block->warps[size_t(g_fiber->warp)];
    unsigned gen = w.gen;
    if (++w.arrived == w.size) {
        w.arrived = 0;
        w.gen++;
    } else {
        wait_for(&w.gen, gen);
    }
}

const void* warp_exchange(const void* value, size_t bytes, int src) {
    Warp& w = g_block->warps[size_t(g_fiber->warp)];
    if (src < 0 || src >= w.size) fault("shuffle from lane %d of a warp of %d lanes", src, w.size);
    unsigned char(*slot)[16] = w.slot[w.gen % 2];
    memcpy(slot[g_fiber->lane], value, bytes);
    sync_warp();
    return slot[src];
}

// The first frame of every fiber: run the kernel body, retire, and never come back.
static void fiber_main() {
    Block& b = *g_block;
    EMU_SWITCH_END(nullptr, &b.scheduler_bottom, &b.scheduler_size);
    (*b.body)();
    if (b.arrived > 0) fault("deadlock: a thread exits while others wait at __syncthreads (%s)", b.barrier_at);
    g_fiber->done = true;
    b.alive--;
    to_scheduler(true);
    __builtin_unreachable();
}

// One pool of stacks, reused by every block (mapped lazily: untouched pages cost nothing).
static char* stacks() {
    static char* base = [] {
        void* p = mmap(nullptr, STACK_BYTES * MAX_THREADS, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) fault("cannot map %zu bytes of fiber stacks", STACK_BYTES * MAX_THREADS);
        return static_cast<char*>(p);
    }();
    return base;
}

// A fresh stack whose first switch "returns" into fiber_main with the alignment of a call (rsp % 16 == 8).
static void* initial_sp(char* stack) {
    auto* top = reinterpret_cast<void**>(stack + STACK_BYTES);
    *--top = nullptr;                                    // fiber_main's return address: it never returns
    *--top = reinterpret_cast<void*>(&fiber_main);      // popped by `ret`
    for (int i = 0; i < 6; i++) *--top = nullptr;        // rbp, rbx, r12-r15
    return top;
}

static void run_block(Block& b, dim3 grid, dim3 block, uint3 idx) {
    int n = int(block.x * block.y * block.z);
    b.fibers.assign(size_t(n), Fiber{});
    b.warps.assign(size_t((n + 31) / 32), Warp{});
    if (n % 32) b.warps.back().size = n % 32;
    b.alive = n;
    b.arrived = b.or_acc = b.or_result = 0;
    for (int i = 0; i < n; i++) {
        Fiber& f = b.fibers[size_t(i)];
        f.c = Coords{uint3{unsigned(i) % block.x, unsigned(i) / block.x % block.y, unsigned(i) / (block.x * block.y)},
                     idx, block, grid};
        f.lane = i % 32;
        f.warp = i / 32;
        f.stack = stacks() + size_t(i) * STACK_BYTES;
        f.sp = initial_sp(f.stack);
    }
    for (;;) {
        bool ran = false, live = false;
        for (Fiber& f : b.fibers) {
            if (f.done) continue;
            live = true;
            if (f.wait_gen && *f.wait_gen == f.wait_val) continue;
            f.wait_gen = nullptr;
            resume(b, f);
            ran = true;
        }
        if (!live) break;
        if (!ran) {
            for (Fiber& f : b.fibers)
                if (!f.done) {
                    g_fiber = &f;
                    g_coords = &f.c;
                    fault("deadlock: a barrier or warp shuffle that not every thread (lane) reaches");
                }
        }
    }
    g_fiber = nullptr;
    g_coords = nullptr;
}

// ============================================================================
// Launches, streams and graph capture
// ============================================================================

struct Capture {
    std::vector<std::function<void()>> ops;
    bool invalid = false;  // an error during capture: cudaStreamEndCapture fails, as the runtime's does
};

}  // namespace qwen_emu

struct CUstream_st {
    qwen_emu::Capture* capture = nullptr;  // non-null while capturing
};
struct CUevent_st {
    double t = 0;  // seconds, host clock, when recorded
};
struct CUgraph_st {
    std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
    std::vector<std::function<void()>> ops;
};

namespace qwen_emu {

struct Device {
    cudaError_t sticky = cudaSuccess;           // returned (and cleared) by cudaGetLastError
    std::map<uintptr_t, size_t> allocs;         // device allocations: start -> bytes
    std::map<const void*, int> smem_optin;      // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize
    size_t used = 0;
};
static Device& dev() {
    static Device d;
    return d;
}

// The most recent error is what cudaGetLastError reports.
static cudaError_t set_error(cudaError_t e) {
    if (e != cudaSuccess) dev().sticky = e;
    return e;
}

static void run_grid(const char* name, dim3 grid, dim3 block, size_t smem, const Body& body) {
    Block b;
    b.kernel = name;
    b.body = &body;
    // 128-byte aligned, as a block's shared window is (wmma tiles need 32); exactly smem bytes for ASan
    void* p = nullptr;
    if (smem && posix_memalign(&p, 128, smem) != 0) fault("cannot allocate %zu bytes of shared memory", smem);
    std::unique_ptr<void, decltype(&free)> shared(p, &free);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                if (smem) memset(shared.get(), 0xff, smem);  // NaN floats: uninitialised reads show
                b.smem = shared.get();
                g_block = &b;
                run_block(b, grid, block, uint3{x, y, z});
                g_block = nullptr;
            }
}

void submit(const void* kernel, const char* name, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Body body) {
    unsigned long long threads = 1ull * block.x * block.y * block.z;
    if (threads < 1 || threads > MAX_THREADS || block.z > 64 || grid.x < 1 || grid.y < 1 || grid.z < 1 ||
        grid.y > 65535 || grid.z > 65535) {
        fprintf(stderr, "cuda_emu: %s: bad launch shape grid (%u,%u,%u) block (%u,%u,%u)\n", name, grid.x, grid.y,
                grid.z, block.x, block.y, block.z);
        if (stream && stream->capture) stream->capture->invalid = true;
        set_error(cudaErrorInvalidConfiguration);
        return;
    }
    auto opt = dev().smem_optin.find(kernel);
    size_t allowed = opt == dev().smem_optin.end() ? SMEM_DEFAULT : size_t(opt->second);
    if (smem > allowed) {
        fprintf(stderr, "cuda_emu: %s: %zu bytes of dynamic shared memory, %zu allowed without a larger opt-in\n", name,
                smem, allowed);
        if (stream && stream->capture) stream->capture->invalid = true;
        set_error(cudaErrorInvalidValue);
        return;
    }
    std::function<void()> op = [name, grid, block, smem, body] { run_grid(name, grid, block, smem, body); };
    if (stream && stream->capture) stream->capture->ops.push_back(op);
    else op();
}

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Whether [p, p + n) lies inside one device allocation.
static bool on_device(const void* p, size_t n) {
    auto& a = dev().allocs;
    auto it = a.upper_bound(reinterpret_cast<uintptr_t>(p));
    if (it == a.begin()) return false;
    --it;
    uintptr_t u = reinterpret_cast<uintptr_t>(p);
    return u >= it->first && u + n <= it->first + it->second;
}

static cudaError_t copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t stream) {
    bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (n == 0) return cudaSuccess;
    if ((dst_dev && !on_device(dst, n)) || (src_dev && !on_device(src, n)) || (!dst_dev && on_device(dst, 1)) ||
        (!src_dev && on_device(src, 1))) {
        fprintf(stderr, "cuda_emu: cudaMemcpy of %zu bytes (kind %d) with a pointer on the wrong side\n", n, int(kind));
        return set_error(cudaErrorInvalidValue);
    }
    if (stream && stream->capture) stream->capture->ops.push_back([dst, src, n] { memcpy(dst, src, n); });
    else memcpy(dst, src, n);
    return cudaSuccess;
}

}  // namespace qwen_emu

// ============================================================================
// The CUDA runtime
// ============================================================================
using qwen_emu::dev;
using qwen_emu::set_error;

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
    if (device != 0) return set_error(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "CPU emulation");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = qwen_emu::SM_COUNT;
    prop->sharedMemPerBlock = qwen_emu::SMEM_DEFAULT;
    prop->sharedMemPerBlockOptin = qwen_emu::SMEM_OPTIN;
    prop->maxThreadsPerBlock = qwen_emu::MAX_THREADS;
    prop->warpSize = 32;
    prop->totalGlobalMem = size_t(16) << 30;
    return cudaSuccess;
}
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void*) {
    memset(attr, 0, sizeof *attr);
    attr->maxThreadsPerBlock = qwen_emu::MAX_THREADS;
    return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
    if (value < 0 || size_t(value) > qwen_emu::SMEM_OPTIN) return set_error(cudaErrorInvalidValue);
    dev().smem_optin[func] = value;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = dev().sticky;
    dev().sticky = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return dev().sticky; }
const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorIllegalState: return "the operation is not permitted in the current state";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    default: return "emulated CUDA error";
    }
}

cudaError_t cudaMalloc(void** p, size_t n) {
    *p = nullptr;
    if (n > (size_t(16) << 30)) return set_error(cudaErrorMemoryAllocation);
    void* q = aligned_alloc(256, (std::max<size_t>(n, 1) + 255) / 256 * 256);
    if (!q) return set_error(cudaErrorMemoryAllocation);
    memset(q, 0xa5, n);  // device memory is not zeroed
    dev().allocs[reinterpret_cast<uintptr_t>(q)] = n;
    dev().used += n;
    *p = q;
    return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
    if (!p) return cudaSuccess;
    auto it = dev().allocs.find(reinterpret_cast<uintptr_t>(p));
    if (it == dev().allocs.end()) return set_error(cudaErrorInvalidValue);
    dev().used -= it->second;
    dev().allocs.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total) {
    *total = size_t(16) << 30;
    *free_b = *total - std::min(*total, dev().used);
    return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned int) {
    *p = malloc(std::max<size_t>(n, 1));
    return *p ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void* p) {
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    return qwen_emu::copy(dst, src, n, kind, nullptr);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
    return qwen_emu::copy(dst, src, n, kind, s);
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t s) {
    if (n && !qwen_emu::on_device(p, n)) return set_error(cudaErrorInvalidValue);
    if (s && s->capture) s->capture->ops.push_back([p, value, n] { memset(p, value, n); });
    else memset(p, value, n);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
    *s = new CUstream_st;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (s && s->capture) return set_error(cudaErrorIllegalState);
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (s && s->capture) {
        s->capture->invalid = true;
        return set_error(cudaErrorStreamCaptureUnsupported);
    }
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t* e) {
    *e = new CUevent_st;
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (s && s->capture) return set_error(cudaErrorStreamCaptureUnsupported);  // not needed by qwen.cuh
    e->t = qwen_emu::now();
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = float((b->t - a->t) * 1e3);
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
    if (!s) return set_error(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot be captured
    if (s->capture) return set_error(cudaErrorIllegalState);
    s->capture = new qwen_emu::Capture;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
    if (!s || !s->capture) return set_error(cudaErrorIllegalState);
    bool invalid = s->capture->invalid;
    *g = invalid ? nullptr : new CUgraph_st{std::move(s->capture->ops)};
    delete s->capture;
    s->capture = nullptr;
    return invalid ? set_error(cudaErrorStreamCaptureInvalidated) : cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g, unsigned long long) {
    *exec = new CUgraphExec_st{g->ops};
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (s && s->capture) return set_error(cudaErrorStreamCaptureUnsupported);
    for (auto& op : exec->ops) op();
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
    delete e;
    return cudaSuccess;
}

}  // extern "C"

// ============================================================================
// cuBLAS: the one GEMM qwen.cuh uses, column-major as cuBLAS defines it
// ============================================================================
struct cublasContext {
    cudaStream_t stream = nullptr;
};

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* h) {
    *h = new cublasContext;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_INVALID_VALUE";
}

static float load(const void* p, cudaDataType t, size_t i) {
    if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
    uint16_t h;
    memcpy(&h, static_cast<const uint16_t*>(p) + i, 2);
    return __uint_as_float(uint32_t(h) << 16);
}

// C (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C, fp32 accumulation; A, B bf16 or fp32, C fp32.
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType at, int lda, const void* B, cudaDataType bt,
                            int ldb, const void* beta, void* C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
    bool ok_types = (at == CUDA_R_16BF || at == CUDA_R_32F) && (bt == CUDA_R_16BF || bt == CUDA_R_32F) &&
                    ct == CUDA_R_32F && compute == CUBLAS_COMPUTE_32F;
    int a_rows = ta == CUBLAS_OP_N ? m : k, b_rows = tb == CUBLAS_OP_N ? k : n;
    if (!h || !ok_types || m < 0 || n < 0 || k < 0 || lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) ||
        ldc < std::max(1, m))
        return CUBLAS_STATUS_INVALID_VALUE;
    float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    float* c = static_cast<float*>(C);
    auto op = [=] {
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float s = 0;
                for (int l = 0; l < k; l++) {
                    float a = ta == CUBLAS_OP_N ? load(A, at, size_t(l) * lda + i) : load(A, at, size_t(i) * lda + l);
                    float b = tb == CUBLAS_OP_N ? load(B, bt, size_t(j) * ldb + l) : load(B, bt, size_t(l) * ldb + j);
                    s += a * b;
                }
                float& out = c[size_t(j) * ldc + i];
                out = be == 0.0f ? al * s : al * s + be * out;  // beta == 0: C is not read (may hold NaN)
            }
    };
    if (h->stream && h->stream->capture) h->stream->capture->ops.push_back(op);
    else op();
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"

// ============================================================================
// CUB's device radix sort, as a stable sort on the host
// ============================================================================
namespace cub {

// CUB's key order for floats: the bits with the sign flipped (positive) or all flipped (negative).
static uint32_t radix_key(float f) {
    uint32_t u = __float_as_uint(f);
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}

static void sort_pairs_descending(const float* keys_in, float* keys_out, const int* values_in, int* values_out, int n);

cudaError_t DeviceRadixSort::SortPairsDescending(void* d_temp, size_t& temp_bytes, const float* keys_in,
                                                 float* keys_out, const int* values_in, int* values_out, int n,
                                                 int begin_bit, int end_bit, cudaStream_t stream) {
    size_t need = size_t(std::max(n, 1)) * 8 + 256;
    if (!d_temp) {
        temp_bytes = need;
        return cudaSuccess;
    }
    if (temp_bytes < need || begin_bit != 0 || end_bit != 32 || n < 0) return set_error(cudaErrorInvalidValue);
    auto op = [=] { sort_pairs_descending(keys_in, keys_out, values_in, values_out, n); };
    if (stream && stream->capture) stream->capture->ops.push_back(op);
    else op();
    return cudaSuccess;
}

static void sort_pairs_descending(const float* keys_in, float* keys_out, const int* values_in, int* values_out, int n) {
    std::vector<int> order(size_t(n), 0);
    for (int i = 0; i < n; i++) order[size_t(i)] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return radix_key(keys_in[a]) > radix_key(keys_in[b]); });
    std::vector<float> k(static_cast<size_t>(n));
    std::vector<int> v(static_cast<size_t>(n));
    for (int i = 0; i < n; i++) {
        k[size_t(i)] = keys_in[order[size_t(i)]];
        v[size_t(i)] = values_in[order[size_t(i)]];
    }
    std::copy(k.begin(), k.end(), keys_out);
    std::copy(v.begin(), v.end(), values_out);
}

}  // namespace cub
