// cuda_emu.cpp: the emulated device behind cuda_emu.hpp: device and shared memory with their race checks, the
// fiber scheduler that runs a grid under varying schedules, and the CUDA runtime and cuBLAS entry points
// qwen.cuh and its tests call (memory is host memory; every call is synchronous; graph capture records and
// replays).
//
// provides: the definitions declared in cuda_emu.hpp; the load / store hooks of -fsanitize-coverage
//           (__sanitizer_cov_load1 .. __sanitizer_cov_store16); cudaMalloc .. cudaGraphLaunch; cublasCreate ..
//           cublasGemmEx; an emulated device of 8 SMs and 227 KB of opt-in shared memory per block.
// This file itself must be compiled without the load / store instrumentation (the Makefile builds it apart).
#include "cuda_emu.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif

// AddressSanitizer must be told when the stack changes under it, and which bytes of the emulator's own memory
// (the device arena, the shared-memory window) may be touched.
#if EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_SWITCH_START(fake, bottom, size) __sanitizer_start_switch_fiber(fake, bottom, size)
#define EMU_SWITCH_END(fake, bottom, size) __sanitizer_finish_switch_fiber(fake, bottom, size)
#define EMU_POISON(p, n) __asan_poison_memory_region(p, n)
#define EMU_UNPOISON(p, n) __asan_unpoison_memory_region(p, n)
#define EMU_STACK_TRACE() __sanitizer_print_stack_trace()
#else
#define EMU_SWITCH_START(fake, bottom, size) ((void)(fake), (void)(bottom), (void)(size))
#define EMU_SWITCH_END(fake, bottom, size) ((void)(fake), (void)(bottom), (void)(size))
#define EMU_POISON(p, n) ((void)(p), (void)(n))
#define EMU_UNPOISON(p, n) ((void)(p), (void)(n))
#define EMU_STACK_TRACE() ((void)0)
#endif
// The per-access path: no sanitizer checks of its own (it only touches the emulator's shadow arrays).
#define EMU_HOT __attribute__((no_sanitize("address", "undefined")))

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

namespace qwen_emu {

constexpr size_t STACK_BYTES = size_t(64) << 10;  // per emulated thread
constexpr int MAX_THREADS = 1024;
constexpr size_t SMEM_DEFAULT = size_t(48) << 10;  // dynamic shared memory without an opt-in
constexpr size_t SMEM_OPTIN = size_t(227) << 10;   // the most one block may opt in to (Hopper)
// The window holds a block's dynamic shared memory, then its static __shared__ variables. The emulator's CUB
// storage is larger than CUB's (one slot per thread), hence room past the opt-in.
constexpr size_t SMEM_WINDOW = SMEM_OPTIN + (size_t(96) << 10);
constexpr size_t SMEM_REDZONE = 32;             // poisoned bytes after each shared array
constexpr size_t DEVICE_BYTES = size_t(16) << 30;  // the emulated device memory
constexpr size_t ALLOC_REDZONE = 256;            // poisoned bytes after each device allocation
constexpr int SM_COUNT = 8;

Options& options() {
    static Options o = [] {
        Options r;
        auto num = [](const char* name, long long dflt) {
            const char* v = getenv(name);
            return v && *v ? strtoll(v, nullptr, 0) : dflt;
        };
        r.schedules = int(std::max(1LL, num("QWEN_EMU_SCHEDULES", r.schedules)));
        r.schedule = int(std::min(2LL, num("QWEN_EMU_SCHEDULE", r.schedule)));
        r.preempt = unsigned(std::max(0LL, num("QWEN_EMU_PREEMPT", r.preempt)));
        r.races = int(std::max(0LL, num("QWEN_EMU_RACES", r.races)));
        r.seed = uint64_t(num("QWEN_EMU_SEED", (long long)r.seed));
        r.math_ulp = int(num("QWEN_EMU_MATH", r.math_ulp));
        return r;
    }();
    return o;
}

static uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

struct Warp {
    int size = 32, arrived = 0;
    unsigned gen = 0;
    int op = 0;               // the operation the waiting lanes are at: 1 __syncwarp, 2 a shuffle
    uint16_t mem_epoch = 0;   // __syncwarp barriers passed: accesses on either side are ordered
    std::vector<unsigned char> scratch;  // warp_scratch
    unsigned scratch_gen = ~0u;          // the warp barrier generation it was filled in
    // Exchange space, two sets used in turn: a lane can only write the set of shuffle k + 2 after every lane
    // has reached shuffle k + 1, so after every lane has read shuffle k. One barrier per shuffle suffices.
    alignas(16) unsigned char slot[2][32][16];
};

struct Fiber {
    void* sp = nullptr;  // saved stack pointer while switched out
    char* stack = nullptr;
    void* fake_stack = nullptr;  // the sanitizer's bookkeeping across switches
    Coords c;
    int lane = 0, warp = 0;
    Warp* w = nullptr;  // its warp
    uint32_t tid = 0;  // the thread's id in the grid: block's linear index * threads per block + thread's index
    uint32_t atomics = 0;  // atomics it has performed
    bool done = false;
    const unsigned* wait_gen = nullptr;  // waiting while *wait_gen == wait_val
    unsigned wait_val = 0;
};

struct Block {
    const char* kernel = "";
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    uint32_t first_tid = 0;  // tid of its thread 0
    int alive = 0, arrived = 0, or_acc = 0, or_result = 0;
    unsigned gen = 0;  // __syncthreads barriers passed
    const char* barrier_at = nullptr;  // where the threads now waiting called __syncthreads
    const Body* body = nullptr;
    std::vector<unsigned char> scratch;  // block_scratch
    unsigned scratch_gen = ~0u;          // the barrier generation it was filled in
    void* scheduler_sp = nullptr;              // the scheduler's stack while a fiber runs
    const void* scheduler_bottom = nullptr;    // and its extent, for the sanitizer
    size_t scheduler_size = 0;
};

Fiber* g_fiber = nullptr;
Block* g_block = nullptr;
const Coords* g_coords = nullptr;

// ============================================================================
// Memory: the device arena, the shared-memory window and their shadows
// ============================================================================

// Shadow of 2 bytes of device or shared memory: what the current launch (device) or block (shared) has done to
// them. An access stands for a set of accesses: `tid` one of them, bep / wep the block's and the warp's barrier
// counts when it was made, the flags how far the set spreads. Sets keep only their latest epoch: accesses
// before a barrier are ordered before everything the block does after it, and a set that spans blocks is
// never ordered with anything.
enum : uint8_t { A_ON = 1, A_THREADS = 2, A_WARPS = 4, A_BLOCKS = 8, A_ATOMIC = 16 };
struct Access {
    uint32_t tid;
    uint16_t bep, wep;
};
struct Cell {
    uint32_t stamp;  // the launch run (device) or block run (shared) these entries belong to; else empty
    uint8_t wf, rf;  // flags of the writes (plain or atomic) and of the plain reads
    uint8_t logged;  // its old bytes are in the run's undo log
    uint8_t pad;
    Access w, r;
};

// What one kernel run needs on every access (set by run_grid).
struct Run {
    uint32_t stamp = 0;        // device cells' stamp
    uint32_t block_stamp = 0;  // shared cells' stamp for the block now running
    uint32_t tpb = 1;          // threads per block
    bool preempt = false;      // preempt at accesses where (rng & preempt_mask) == 0
    uint32_t preempt_mask = 0;
    uint64_t rng = 1;
    bool log = false;          // record the old bytes of every device cell it writes (for the comparison)
    std::vector<std::pair<uint16_t*, uint16_t>> undo;
    uint64_t digest = 0;       // of the values its exchanges and compare-and-swaps returned
    std::unordered_map<uint64_t, uint64_t> returned;          // first run: (tid, atomic) -> value returned
    const std::unordered_map<uint64_t, uint64_t>* replay = nullptr;  // later runs: the first run's
};

struct StaticVar {
    const void* key;
    size_t off, bytes;
    const char* name;
};

// The shared-memory window of the running launch: dynamic memory at 0, then its static variables.
struct Window {
    unsigned char* base = nullptr;
    Cell* cells = nullptr;
    size_t dynamic = 0, end = 0;
    std::vector<StaticVar> vars;
    const char* kernel = "";
};

struct Arena {
    char* base = nullptr;
    Cell* cells = nullptr;
    size_t rw = 0, top = 0;          // readable-writable prefix, bytes handed out so far
    std::map<size_t, size_t> spare;  // free ranges below top: offset -> bytes
};

// Who runs: the host (a device address is a host dereference), a kernel thread (loads and stores go through the
// checks), or the emulator inside an atomic (its read-modify-write is not a plain access).
enum Runner { HOST, KERNEL, QUIET };
static Runner g_runner = HOST;
static bool g_filling = false;  // a thread fills a block or warp scratch: no preemption (or all would fill it)
static bool g_races = true;
static uintptr_t g_dev_lo = 0, g_dev_len = 0;
static uintptr_t g_win_lo = 0, g_win_len = 0;
static Cell* g_dev_cells = nullptr;
static Cell* g_win_cells = nullptr;
static Run* g_run = nullptr;
static Window g_win;
static uint32_t g_stamps = 0, g_block_stamps = 0;  // stamps handed out to runs and to blocks

static void* map_or_die(size_t bytes, int prot) {
    void* p = mmap(nullptr, bytes, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) fault("cannot map %zu bytes", bytes);
    return p;
}

static Arena& arena() {
    static Arena a = [] {
        Arena r;
        r.base = static_cast<char*>(map_or_die(DEVICE_BYTES, PROT_NONE));  // made readable as it is handed out
        r.cells = static_cast<Cell*>(map_or_die((DEVICE_BYTES / 2 + 16) * sizeof(Cell), PROT_READ | PROT_WRITE));
        g_dev_lo = reinterpret_cast<uintptr_t>(r.base);
        g_dev_len = DEVICE_BYTES;
        g_dev_cells = r.cells;
        return r;
    }();
    return a;
}

static Window& window() {
    if (!g_win.base) {
        void* p = nullptr;
        if (posix_memalign(&p, 128, SMEM_WINDOW) != 0) fault("cannot allocate the shared-memory window");
        g_win.base = static_cast<unsigned char*>(p);
        g_win.cells = static_cast<Cell*>(map_or_die((SMEM_WINDOW / 2 + 16) * sizeof(Cell), PROT_READ | PROT_WRITE));
        g_win_lo = reinterpret_cast<uintptr_t>(p);
        g_win_len = SMEM_WINDOW;
        g_win_cells = g_win.cells;
    }
    return g_win;
}

// ---- the race checks ----

struct Me {  // the thread now accessing memory
    uint32_t tid, first, warp;
    uint16_t bep, wep;
};

EMU_HOT static inline Me me() {
    const Fiber& f = *g_fiber;
    const Block& b = *g_block;
    return Me{f.tid, b.first_tid, uint32_t(f.warp), uint16_t(b.gen), f.w->mem_epoch};
}

// Whether some access of the set (flags f, one member a) may run concurrently with mine: another thread, and
// no barrier between (__syncthreads for the block, __syncwarp for the warp). Other blocks are never ordered.
EMU_HOT static inline bool concurrent(uint8_t f, const Access& a, const Me& m, uint32_t tpb) {
    if (!(f & A_ON)) return false;
    if (f & A_BLOCKS) return true;
    uint32_t rel = a.tid - m.first;
    if (rel >= tpb) return true;
    if (int16_t(uint16_t(m.bep - a.bep)) > 0) return false;
    if (!(f & A_THREADS) && a.tid == m.tid) return false;
    if (!(f & A_WARPS) && (rel >> 5) == m.warp && int16_t(uint16_t(m.wep - a.wep)) > 0) return false;
    return true;
}

// Adds my access to the set (extra: A_ATOMIC for atomic writes).
EMU_HOT static inline void join(uint8_t& f, Access& a, const Me& m, uint32_t tpb, uint8_t extra) {
    Access mine{m.tid, m.bep, m.wep};
    if (!(f & A_ON)) {
        f = uint8_t(A_ON | extra), a = mine;
        return;
    }
    if (f & A_BLOCKS) return;
    uint32_t rel = a.tid - m.first;
    if (rel >= tpb) {
        f |= A_BLOCKS | A_WARPS | A_THREADS;
    } else if (int16_t(uint16_t(m.bep - a.bep)) > 0) {
        f = uint8_t(A_ON | extra), a = mine;  // the older ones are ordered before whatever the block does next
    } else if (f & A_WARPS) {
    } else if ((rel >> 5) != m.warp) {
        f |= A_WARPS | A_THREADS;
    } else if (int16_t(uint16_t(m.wep - a.wep)) > 0) {
        f = uint8_t(A_ON | extra), a = mine;
    } else if (a.tid != m.tid) {
        f |= A_THREADS;
    }
}

enum Kind { READ, WRITE, ATOMIC };
[[noreturn]] static void report_race(const void* addr, bool device, Kind kind, const Cell& c, bool with_write);

EMU_HOT static inline void check_cell(Cell& c, void* addr, bool device, Kind kind, const Me& m, uint32_t stamp) {
    Run& r = *g_run;
    if (c.stamp != stamp) {
        c.stamp = stamp;
        c.wf = c.rf = c.logged = 0;
    }
    if (kind != READ && device && r.log && !c.logged) {
        uint16_t* p = static_cast<uint16_t*>(addr);
        r.undo.emplace_back(p, *p);
        c.logged = 1;
    }
    if (!g_races) return;
    uint32_t tpb = r.tpb;
    if (kind == READ) {
        if (concurrent(c.wf, c.w, m, tpb)) report_race(addr, device, kind, c, true);
        join(c.rf, c.r, m, tpb, 0);
        return;
    }
    bool write_clash = (kind == WRITE || !(c.wf & A_ATOMIC)) && concurrent(c.wf, c.w, m, tpb);
    if (write_clash) report_race(addr, device, kind, c, true);
    if (concurrent(c.rf, c.r, m, tpb)) report_race(addr, device, kind, c, false);
    if (kind == ATOMIC && (c.wf & (A_ON | A_ATOMIC)) == (A_ON | A_ATOMIC)) join(c.wf, c.w, m, tpb, A_ATOMIC);
    else c.wf = uint8_t(A_ON | (kind == ATOMIC ? A_ATOMIC : 0)), c.w = Access{m.tid, m.bep, m.wep};
    c.rf = 0;  // every earlier read is ordered before this write (or was reported)
}

static void preempt();
[[noreturn]] static void host_touches_device(const void* addr);

// A kernel thread's access to device or shared memory: the race checks, the undo log, maybe a preemption.
EMU_HOT __attribute__((noinline)) static void tracked_access(const void* p, unsigned n, Kind kind) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p), off = a - g_dev_lo;
    Cell* cells;
    uint32_t stamp;
    bool device = off < g_dev_len;
    if (device) {
        cells = g_dev_cells;
        stamp = g_run->stamp;
    } else {
        off = a - g_win_lo;
        cells = g_win_cells;
        stamp = g_run->block_stamp;
    }
    Run& r = *g_run;
    if (g_races || (r.log && device && kind != READ)) {
        Me m = me();
        uintptr_t first = off >> 1, last = (off + n - 1) >> 1;
        for (uintptr_t i = first; i <= last; i++)
            check_cell(cells[i], reinterpret_cast<void*>(a - off + (i << 1)), device, kind, m, stamp);
    }
    if (r.preempt && !g_filling) {
        r.rng ^= r.rng << 13, r.rng ^= r.rng >> 7, r.rng ^= r.rng << 17;  // xorshift64
        if ((r.rng & r.preempt_mask) == 0) preempt();
    }
}

// Every load and store of the instrumented code: most touch a thread's own stack, and return at once.
EMU_HOT static inline void on_access(const void* p, unsigned n, Kind kind) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (g_runner == KERNEL) {
        if (a - g_dev_lo < g_dev_len || a - g_win_lo < g_win_len) tracked_access(p, n, kind);
    } else if (g_runner == HOST && a - g_dev_lo < g_dev_len) {
        host_touches_device(p);
    }
}

}  // namespace qwen_emu

// The hooks of -fsanitize-coverage=trace-loads,trace-stores: called before every load and store of the
// instrumented code with the address it touches.
extern "C" {
#define QWEN_EMU_HOOKS(n, T)                                                                                     \
    EMU_HOT void __sanitizer_cov_load##n(T* p) { qwen_emu::on_access(p, n, qwen_emu::READ); }                  \
    EMU_HOT void __sanitizer_cov_store##n(T* p) { qwen_emu::on_access(p, n, qwen_emu::WRITE); }
QWEN_EMU_HOOKS(1, uint8_t)
QWEN_EMU_HOOKS(2, uint16_t)
QWEN_EMU_HOOKS(4, uint32_t)
QWEN_EMU_HOOKS(8, uint64_t)
QWEN_EMU_HOOKS(16, __int128)
#undef QWEN_EMU_HOOKS
}

namespace qwen_emu {

int lane_id() { return g_fiber->lane; }
void* dynamic_smem_base() { return window().base; }

static void print_where() {
    if (g_fiber)
        fprintf(stderr, "cuda_emu: %s: block (%u,%u,%u) thread (%u,%u,%u): ", g_block->kernel, g_fiber->c.block.x,
                g_fiber->c.block.y, g_fiber->c.block.z, g_fiber->c.thread.x, g_fiber->c.thread.y, g_fiber->c.thread.z);
    else fprintf(stderr, "cuda_emu: ");
}

void fault(const char* fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    print_where();
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
    abort();
}

// "thread (x,y,z) of block (x,y,z)" for a tid of the running launch.
static std::string thread_name(uint32_t tid) {
    const Coords& c = g_fiber->c;
    uint32_t tpb = g_run->tpb, b = tid / tpb, t = tid % tpb;
    char s[128];
    snprintf(s, sizeof s, "thread (%u,%u,%u) of block (%u,%u,%u)", t % c.block_dim.x, t / c.block_dim.x % c.block_dim.y,
             t / (c.block_dim.x * c.block_dim.y), b % c.grid_dim.x, b / c.grid_dim.x % c.grid_dim.y,
             b / (c.grid_dim.x * c.grid_dim.y));
    return s;
}

// Where addr is, in words: which allocation or shared array, and the byte offset in it.
static std::string place(const void* addr, bool device);

static void report_race(const void* addr, bool device, Kind kind, const Cell& c, bool with_write) {
    static const char* verb[] = {"reads", "writes", "atomically updates"};
    uint8_t f = with_write ? c.wf : c.rf;
    const Access& a = with_write ? c.w : c.r;
    const char* theirs = !with_write ? "read" : (f & A_ATOMIC) ? "atomically updated" : "wrote";
    std::string who = (f & A_BLOCKS) ? "threads of several blocks"
                      : (f & A_THREADS) ? "several threads, among them " + thread_name(a.tid)
                                        : thread_name(a.tid);
    bool other_block = (f & A_BLOCKS) || a.tid - g_block->first_tid >= g_run->tpb;
    g_runner = QUIET;
    print_where();
    fprintf(stderr,
            "data race: this thread %s %s, which %s %s with no %s between them (the stack below is this thread's "
            "access)\n",
            verb[kind], place(addr, device).c_str(), who.c_str(), theirs,
            other_block ? "ordering at all: blocks of one launch run concurrently" : "__syncthreads or __syncwarp");
    EMU_STACK_TRACE();
    fflush(stderr);
    abort();
}

static void host_touches_device(const void* addr) {
    fprintf(stderr, "cuda_emu: host code dereferences %s (a device pointer: copy it with cudaMemcpy)\n",
            place(addr, true).c_str());
    EMU_STACK_TRACE();
    fflush(stderr);
    abort();
}

// ---- device memory ----

struct Device {
    cudaError_t sticky = cudaSuccess;           // returned (and cleared) by cudaGetLastError
    std::map<uintptr_t, size_t> allocs;         // device allocations: start -> bytes
    std::map<const void*, int> smem_optin;      // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize
    size_t used = 0;
    uint64_t launches = 0, compared = 0, uncompared = 0;
    std::map<const void*, uint64_t> launches_of;  // kernel -> launches so far
    ~Device() {
        const char* verbose = getenv("QWEN_EMU_VERBOSE");
        if (verbose && strcmp(verbose, "0"))
            fprintf(stderr, "cuda_emu: %llu launches; %llu runs compared with the first, %llu not (their exchanges "
                    "returned other values)\n", (unsigned long long)launches, (unsigned long long)compared,
                    (unsigned long long)uncompared);
        // device memory is not the heap's, so the leak check is this one
        const char* check = getenv("QWEN_EMU_LEAKS");
        if (allocs.empty() || (check && !strcmp(check, "0"))) return;
        fprintf(stderr, "cuda_emu: %zu device allocations (%zu bytes) were never freed, the first of %zu bytes\n",
                allocs.size(), used, allocs.begin()->second);
        fflush(stderr);
        _exit(1);
    }
};
static Device& dev() {
    static Device d;
    return d;
}

static std::string place(const void* addr, bool device) {
    char s[256];
    uintptr_t u = reinterpret_cast<uintptr_t>(addr);
    if (device) {
        auto& a = dev().allocs;
        auto it = a.upper_bound(u);
        if (it != a.begin()) {
            --it;
            snprintf(s, sizeof s, "byte %zu of a device allocation of %zu bytes", size_t(u - it->first), it->second);
        } else {
            snprintf(s, sizeof s, "device memory outside any allocation");
        }
        return s;
    }
    size_t off = size_t(u - g_win_lo);
    for (const StaticVar& v : g_win.vars)
        if (off >= v.off && off < v.off + v.bytes) {
            snprintf(s, sizeof s, "byte %zu of __shared__ %s (%zu bytes)", off - v.off, v.name, v.bytes);
            return s;
        }
    snprintf(s, sizeof s, "byte %zu of dynamic shared memory (%zu bytes)", off, g_win.dynamic);
    return s;
}

static char* device_alloc(size_t n) {
    Arena& a = arena();
    size_t need = (std::max<size_t>(n, 1) + 255) / 256 * 256 + ALLOC_REDZONE;
    size_t off = SIZE_MAX;
    for (auto it = a.spare.begin(); it != a.spare.end(); ++it)
        if (it->second >= need) {  // first fit
            off = it->first;
            if (it->second > need) a.spare[off + need] = it->second - need;
            a.spare.erase(it);
            break;
        }
    if (off == SIZE_MAX) {
        if (a.top + need > DEVICE_BYTES) return nullptr;
        off = a.top;
        a.top += need;
        if (a.top > a.rw) {  // the rest of the arena stays inaccessible: a wild pointer faults
            size_t rw = (a.top + (size_t(1) << 20) - 1) >> 20 << 20;
            if (mprotect(a.base + a.rw, rw - a.rw, PROT_READ | PROT_WRITE) != 0) return nullptr;
            EMU_POISON(a.base + a.rw, rw - a.rw);
            a.rw = rw;
        }
    }
    char* p = a.base + off;
    EMU_UNPOISON(p, n);
    memset(p, 0xff, n);  // not zeroed: NaN as fp32 and bf16, -1 as integers
    return p;
}

static void device_free(char* p, size_t n) {
    Arena& a = arena();
    size_t off = size_t(p - a.base), need = (std::max<size_t>(n, 1) + 255) / 256 * 256 + ALLOC_REDZONE;
    EMU_POISON(p, need);  // a use after cudaFree is an ASan error
    if (need >= (size_t(64) << 10)) {  // give the pages (and their shadow) back
        size_t lo = (off + 4095) / 4096 * 4096, hi = (off + need) / 4096 * 4096;
        if (hi > lo) madvise(a.base + lo, hi - lo, MADV_DONTNEED);
        size_t clo = (lo / 2 * sizeof(Cell) + 4095) / 4096 * 4096, chi = hi / 2 * sizeof(Cell) / 4096 * 4096;
        if (hi > lo && chi > clo) madvise(reinterpret_cast<char*>(a.cells) + clo, chi - clo, MADV_DONTNEED);
    }
    auto next = a.spare.lower_bound(off);
    if (next != a.spare.end() && next->first == off + need) {  // merge with the free range after
        need += next->second;
        next = a.spare.erase(next);
    }
    if (next != a.spare.begin()) {  // and with the one before
        auto prev = std::prev(next);
        if (prev->first + prev->second == off) {
            prev->second += need;
            return;
        }
    }
    a.spare[off] = need;
}

// ---- shared memory ----

void* static_smem_at(const void* key, size_t bytes, size_t align, const char* name) {
    Window& w = g_win;
    for (const StaticVar& v : w.vars)
        if (v.key == key) return w.base + v.off;
    size_t a = std::max<size_t>(align, 16), off = (w.end + a - 1) / a * a;
    if (off + bytes + SMEM_REDZONE > SMEM_WINDOW)
        fault("__shared__ %s: %zu bytes of static and %zu of dynamic shared memory exceed the emulator's %zu", name,
              off + bytes - w.dynamic, w.dynamic, SMEM_WINDOW);
    w.vars.push_back(StaticVar{key, off, bytes, name});
    w.end = off + bytes + SMEM_REDZONE;
    EMU_UNPOISON(w.base + off, bytes);
    memset(w.base + off, 0xff, bytes);  // as every block's copy starts
    return w.base + off;
}

// Every block starts with NaN bytes in its shared memory, and no accesses on record.
static void fresh_shared(Window& w) {
    memset(w.base, 0xff, w.dynamic);
    for (const StaticVar& v : w.vars) memset(w.base + v.off, 0xff, v.bytes);
}

void* block_scratch(size_t bytes, bool* filled) {
    Block& b = *g_block;
    if (b.scratch.size() < bytes) b.scratch.resize(bytes);
    *filled = b.scratch_gen == b.gen;
    g_filling = !*filled;
    return b.scratch.data();
}
void block_scratch_filled() {
    g_block->scratch_gen = g_block->gen;
    g_filling = false;
}

void* warp_scratch(size_t bytes, bool* filled) {
    Warp& w = *g_fiber->w;
    if (w.scratch.size() < bytes) w.scratch.resize(bytes);
    *filled = w.scratch_gen == w.gen;
    g_filling = !*filled;
    return w.scratch.data();
}
void warp_scratch_filled() {
    g_fiber->w->scratch_gen = g_fiber->w->gen;
    g_filling = false;
}

void mma_share(float* d, const float* a, const float* b, const float* c, int m, int n, int k) {
    for (int e = g_fiber->lane; e < m * n; e += 32) {
        int i = e / n, j = e % n;
        float s = c[e];
        for (int l = 0; l < k; l++) s += a[i * k + l] * b[l * n + j];
        d[e] = s;  // d may alias c: element e of c was read above
    }
}

// ---- atomics ----

void atomic_begin(void* p, size_t bytes) {
    if (g_runner != KERNEL) return;  // atomics in host code: plain host code
    on_access(p, unsigned(bytes), ATOMIC);  // may preempt before the update, not during it
    g_runner = QUIET;
}

void atomic_end(void* returned, size_t bytes, AtomicKind kind) {
    if (g_runner != QUIET) return;
    g_runner = KERNEL;
    Run& r = *g_run;
    if (kind == ATOMIC_FLOAT || !r.log) return;
    Fiber& f = *g_fiber;
    uint64_t v = 0, key = uint64_t(f.tid) << 32 | f.atomics++;
    memcpy(&v, returned, std::min(bytes, sizeof v));
    if (kind == ATOMIC_ORDERED) {
        r.digest += mix64(key ^ mix64(v));  // a sum: the same in any order
    } else if (!r.replay) {
        r.returned.emplace(key, v);
    } else {
        auto it = r.replay->find(key);  // missing: this thread's atomics differ from the first run's, which the
        if (it != r.replay->end()) memcpy(returned, &it->second, std::min(bytes, sizeof v));  // comparison shows
    }
}

// ---- device math ----

float device_math(float exact, float x, float y, int fn, int max_ulp) {
    if (!g_coords || options().math_ulp == 0 || max_ulp <= 0) return exact;
    if (!std::isfinite(exact) || exact == 0.0f || (x == 0.0f && y == 0.0f)) return exact;
    uint64_t h = mix64(options().seed ^ mix64(uint64_t(fn) << 48 ^ uint64_t(__float_as_uint(y)) << 32 ^
                                              __float_as_uint(x)));
    int k = int(h % uint64_t(2 * max_ulp + 1)) - max_ulp;
    uint32_t u = __float_as_uint(exact), mag = u & 0x7fffffffu;
    int64_t moved = int64_t(mag) + k;
    if (moved < 0x00800000 || moved >= 0x7f800000) return exact;  // stays a normal finite float of its sign
    return __uint_as_float((u & 0x80000000u) | uint32_t(moved));
}

// ============================================================================
// The scheduler
// ============================================================================

// Fiber -> scheduler. `dying`: the fiber will not be resumed (its sanitizer state can go).
static void to_scheduler(bool dying) {
    Fiber* self = g_fiber;
    Block& b = *g_block;
    EMU_SWITCH_START(dying ? nullptr : &self->fake_stack, b.scheduler_bottom, b.scheduler_size);
    qwen_emu_switch_stack(&self->sp, b.scheduler_sp);
    EMU_SWITCH_END(self->fake_stack, &b.scheduler_bottom, &b.scheduler_size);
}

// Scheduler -> fiber f, until it waits, is preempted or finishes.
static void resume(Block& b, Fiber& f) {
    void* fake = nullptr;
    g_fiber = &f;
    g_coords = &f.c;
    EMU_SWITCH_START(&fake, f.stack, STACK_BYTES);
    qwen_emu_switch_stack(&b.scheduler_sp, f.sp);
    EMU_SWITCH_END(fake, nullptr, nullptr);
}

static void preempt() {  // back to the scheduler, still runnable
    to_scheduler(false);
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

// op 1: __syncwarp (orders the lanes' memory accesses), 2: a shuffle (moves registers only).
static void warp_barrier(int op) {
    Warp& w = *g_fiber->w;
    unsigned gen = w.gen;
    if (w.arrived == 0) w.op = op;
    else if (w.op != op) fault("deadlock: lanes of a warp meet at different warp operations (__syncwarp and a shuffle)");
    if (++w.arrived == w.size) {
        w.arrived = 0;
        if (op == 1) w.mem_epoch++;
        w.gen++;
    } else {
        wait_for(&w.gen, gen);
    }
}

void sync_warp() { warp_barrier(1); }

const void* warp_exchange(const void* value, size_t bytes, int src) {
    Warp& w = *g_fiber->w;
    if (src < 0 || src >= w.size) fault("shuffle from lane %d of a warp of %d lanes", src, w.size);
    unsigned char(*slot)[16] = w.slot[w.gen % 2];
    memcpy(slot[g_fiber->lane], value, bytes);
    warp_barrier(2);
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
    static char* base = static_cast<char*>(map_or_die(STACK_BYTES * MAX_THREADS, PROT_READ | PROT_WRITE));
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

// How a run orders blocks and threads: 0 in order, without preemption (the plain schedule); 1 reversed;
// 2 shuffled (blocks) and a random stride per round (threads). 1 and 2 preempt at memory accesses.
static const char* schedule_name(int kind) {
    static const char* names[] = {"blocks and threads in order", "blocks and threads reversed, preempted",
                                  "blocks and threads shuffled, preempted"};
    return names[kind];
}

static void run_block(Block& b, dim3 grid, dim3 block, uint3 idx, uint32_t linear, int kind, Run& r) {
    int n = int(block.x * block.y * block.z);
    b.fibers.assign(size_t(n), Fiber{});
    b.warps.assign(size_t((n + 31) / 32), Warp{});
    if (n % 32) b.warps.back().size = n % 32;
    b.alive = n;
    b.arrived = b.or_acc = b.or_result = 0;
    b.gen = 0;
    b.scratch_gen = ~0u;
    b.first_tid = linear * uint32_t(n);
    for (int i = 0; i < n; i++) {
        Fiber& f = b.fibers[size_t(i)];
        f.c = Coords{uint3{unsigned(i) % block.x, unsigned(i) / block.x % block.y, unsigned(i) / (block.x * block.y)},
                     idx, block, grid};
        f.lane = i % 32;
        f.warp = i / 32;
        f.w = &b.warps[size_t(f.warp)];
        f.tid = b.first_tid + uint32_t(i);
        f.stack = stacks() + size_t(i) * STACK_BYTES;
        f.sp = initial_sp(f.stack);
    }
    for (;;) {
        bool ran = false, live = false;
        int start = 0, stride = 1;
        if (kind == 1) start = n - 1, stride = n - 1;  // i = n-1, n-2, ..., 0 (mod n)
        if (kind == 2) {  // a random start and a random stride prime to n
            uint64_t z = r.rng = mix64(r.rng) | 1;
            start = int(z % unsigned(n));
            do z = mix64(z), stride = 1 + int(z % unsigned(n)); while (std::gcd(stride, n) != 1);
        }
        for (int k = 0, i = start; k < n; k++, i = i + stride >= n ? i + stride - n : i + stride) {
            Fiber& f = b.fibers[size_t(i)];
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

// One run of a grid under schedule `kind`.
static void run_once(const char* name, dim3 grid, dim3 block, const Body& body, int kind, Run& r) {
    Block b;
    b.kernel = name;
    b.body = &body;
    uint32_t nb = grid.x * grid.y * grid.z;
    std::vector<uint32_t> order(nb);
    std::iota(order.begin(), order.end(), 0u);
    if (kind == 1) std::reverse(order.begin(), order.end());
    if (kind == 2) std::shuffle(order.begin(), order.end(), std::mt19937_64(r.rng));
    g_run = &r;
    for (uint32_t linear : order) {
        uint3 idx{linear % grid.x, linear / grid.x % grid.y, linear / (grid.x * grid.y)};
        r.block_stamp = ++g_block_stamps;
        fresh_shared(g_win);
        g_block = &b;
        g_runner = KERNEL;
        run_block(b, grid, block, idx, linear, kind, r);
        g_runner = HOST;
        g_block = nullptr;
    }
    g_run = nullptr;
}

static void run_grid(const void* kernel, const char* name, dim3 grid, dim3 block, size_t smem, const Body& body) {
    if (uint64_t(grid.x) * grid.y * grid.z * block.x * block.y * block.z >= (uint64_t(1) << 32))
        fault("%s: more than 2^32 threads in one launch", name);
    arena();
    Window& w = window();
    w.kernel = name;
    w.dynamic = smem;
    w.end = (smem + SMEM_REDZONE + 127) / 128 * 128;
    w.vars.clear();
    EMU_POISON(w.base, SMEM_WINDOW);  // only what the launch asked for is addressable
    EMU_UNPOISON(w.base, smem);
    const Options& o = options();
    uint64_t serial = ++dev().launches, nth = dev().launches_of[kernel]++;
    g_races = o.races == 1 || (o.races > 1 && (nth < 4 || nth % uint64_t(o.races) == 0));
    int runs = o.schedules;
    std::unordered_map<uint16_t*, uint16_t> first;  // the first run's results, when runs are compared
    std::unordered_map<uint64_t, uint64_t> first_returned;  // and what its atomics returned
    uint64_t first_digest = 0;
    int first_kind = 0;
    for (int s = 0; s < runs; s++) {
        Run r;
        if (s > 0) r.replay = &first_returned;
        r.stamp = ++g_stamps;
        r.tpb = block.x * block.y * block.z;
        r.rng = mix64(o.seed ^ mix64(serial * 16 + uint64_t(s))) | 1;
        // one run: the three kinds take turns; several: the plain one first, then reversed and shuffled in turn
        int kind = runs > 1 && s == 0 ? 0
                   : o.schedule >= 0  ? o.schedule
                   : runs == 1        ? int(serial % 3)
                                      : 1 + int((serial + uint64_t(s)) % 2);
        if (kind != 0 && o.preempt > 0) {
            r.preempt = true;
            while (r.preempt_mask + 1 < o.preempt) r.preempt_mask = r.preempt_mask * 2 + 1;
        }
        r.log = runs > 1;
        run_once(name, grid, block, body, kind, r);
        if (runs == 1) break;
        if (s == 0) {
            for (auto& [p, old] : r.undo) first.emplace(p, *p);
            first_digest = r.digest;
            first_kind = kind;
            first_returned = std::move(r.returned);
        } else if (r.digest != first_digest) {
            dev().uncompared++;  // its exchanges returned other values: its bytes may differ
        } else {
            dev().compared++;
            auto differ = [&](uint16_t* p, uint16_t want) {
                if (*p == want) return;
                fprintf(stderr,
                        "cuda_emu: %s: its result depends on the schedule (a race or a missing barrier): %s is "
                        "0x%04x when run with %s, 0x%04x with %s\n",
                        name, place(p, true).c_str(), want, schedule_name(first_kind), *p, schedule_name(kind));
                fflush(stderr);
                abort();
            };
            for (auto& [p, want] : first) differ(p, want);
            for (auto& [p, old] : r.undo)
                if (!first.count(p)) differ(p, old);  // written in this run only: must have kept its old value
        }
        if (s + 1 < runs)
            for (auto& [p, old] : r.undo) *p = old;  // the next run starts from the same memory
    }
}

}  // namespace qwen_emu

// ============================================================================
// Launches, streams and graph capture
// ============================================================================
namespace qwen_emu {

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

// The most recent error is what cudaGetLastError reports.
static cudaError_t set_error(cudaError_t e) {
    if (e != cudaSuccess) dev().sticky = e;
    return e;
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
    std::function<void()> op = [kernel, name, grid, block, smem, body] {
        run_grid(kernel, name, grid, block, smem, body);
    };
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
    prop->totalGlobalMem = qwen_emu::DEVICE_BYTES;
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

// Device memory comes from the emulator's arena (so that its shadow is a fixed offset away), 0xff-filled.
cudaError_t cudaMalloc(void** p, size_t n) {
    *p = nullptr;
    if (n > qwen_emu::DEVICE_BYTES - dev().used) return set_error(cudaErrorMemoryAllocation);
    char* q = qwen_emu::device_alloc(n);
    if (!q) return set_error(cudaErrorMemoryAllocation);
    dev().allocs[reinterpret_cast<uintptr_t>(q)] = n;
    dev().used += n;
    *p = q;
    return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
    if (!p) return cudaSuccess;
    auto it = dev().allocs.find(reinterpret_cast<uintptr_t>(p));
    if (it == dev().allocs.end()) return set_error(cudaErrorInvalidValue);
    qwen_emu::device_free(static_cast<char*>(p), it->second);
    dev().used -= it->second;
    dev().allocs.erase(it);
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total) {
    *total = qwen_emu::DEVICE_BYTES;
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
