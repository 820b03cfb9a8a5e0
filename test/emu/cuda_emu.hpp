// cuda_emu.hpp: a CPU stand-in for the GPU, so that the CUDA code of qwen.cuh runs (slowly) and is tested on
// machines without one. The build force-includes this header, compiles qwen.cuh as plain C++ (clang) after
// rewriting `k<<<grid, block, smem, stream>>>(args)` and the `__shared__` declarations (see the Makefile's emu
// rules), instruments every load and store (-fsanitize-coverage=trace-loads,trace-stores) and links
// cuda_emu.cpp in place of the CUDA runtime and cuBLAS.
//
// provides:
//   threadIdx, blockIdx, blockDim, gridDim       the running emulated thread's coordinates
//   __syncthreads, __syncthreads_or, __syncwarp  block and warp barriers
//   __shfl_sync, __shfl_xor_sync, __shfl_up_sync, __shfl_down_sync   warp exchanges
//   device intrinsics qwen.cuh uses              __ldcs, __ldg, bit casts, atomics, min / max
//   device math                                  expf, __expf, rsqrtf, sincosf, tanhf, ...: a few ulp off in kernels
//   qwen_emu::launch(kernel, name, grid, block, smem, stream)(args...)   what a <<<>>> launch becomes
//   qwen_emu::dynamic_smem<T>()                  what `extern __shared__ T name[]` becomes
//   qwen_emu::static_smem<T>(key, name)          what `__shared__ T name` becomes
//   qwen_emu::options()                          the settings below (schedules, preemption, races, math)
//   nvcuda::wmma fragments, load / store / fill / mma_sync            the tensor-core API qwen.cuh uses
//   cub::BlockReduce, cub::BlockScan, cub::DeviceRadixSort::SortPairsDescending   the CUB that qwen.cuh uses
//
// The model of the hardware: each thread of a block is a fiber on one host thread; the blocks of a grid run
// one after another. A thread runs until it reaches a barrier, or until the scheduler preempts it at a load,
// store or atomic. A barrier opens when every live thread of the block (for a warp operation: every lane of
// the warp) has arrived. The emulator is adversarial where the hardware leaves things undefined:
//   - Races. Every load and store of device or shared memory is checked against the others of its launch: two
//     threads touching the same bytes, one of them writing, not both atomically, with no __syncthreads (same
//     block) or __syncwarp (same warp; a shuffle is not one) between them, abort with the kernel, both threads
//     and the address. Blocks of one launch are never ordered. The check sees every such pair whatever the
//     schedule, so a race fails on the first run that executes it, not on an unlucky interleaving.
//   - Schedules. Launches run their blocks in order, reversed or shuffled, resume the threads of a block in the
//     same kind of order and, when not in order, preempt them at random loads, stores and atomics. With
//     QWEN_EMU_SCHEDULES=n >= 2 every launch runs n times from the same device memory, first in order, and must
//     write the same bytes each time, else it aborts naming the kernel; that also catches what the race checks
//     cannot see. The order of atomics is the launch's own: later runs get the first run's results of integer
//     atomics (see atomic_end).
//   - Poison. Fresh device memory, and static and dynamic shared memory at the start of every block, are 0xff
//     bytes: NaN as fp32 and as bf16, -1 as integers. CUB's block results are poisoned outside thread 0.
//   - Faults. A barrier that can never open (divergent __syncthreads, threads at different barriers, a thread
//     exiting while others wait, lanes at different warp operations) aborts; bad launch shapes and shared memory
//     past the opt-in fail the launch; host code that dereferences a device pointer aborts; device memory past
//     an allocation or after cudaFree, and shared memory past an array, are ASan errors; device memory still
//     allocated at exit fails the process.
// Exact and not exact. Integer and bit operations, +, -, *, /, sqrtf and fmaf are IEEE, as the hardware's
// defaults are (products are not contracted into fmaf). The transcendentals are not the host's: inside a
// kernel expf, exp2f, logf, log2f, sinf, cosf, sincosf, tanhf, powf, erff and rsqrtf return the host's value
// moved by up to their CUDA error bound (1 to 4 ulp; __expf and the other fast intrinsics by theirs), as a
// seeded function of the argument: one argument, one result, as on one GPU; exp(0) = 1 and zero, infinite and
// NaN results are exact. So kernels match the CPU engine within tolerances, not bit for bit; sampling on the
// device draws the CPU Sampler's token except where the uniform draw falls within a few ulp of a boundary.
// Kernels are deterministic (same inputs, same bits, every schedule) except where atomics decide an order.
// Not modelled: memory ordering beyond barriers and atomics (fences, volatile), accesses the compiler does not
// emit as loads and stores (memcpy), the hardware's fragment layouts, its speed. Every copy and launch is
// synchronous; streams only matter for graph capture, which records launches and copies for replay. The
// emulated device is an sm_90 with 8 SMs; tests that matter for smaller GPUs lower Launch::smem_optin.
// Settings (environment): QWEN_EMU_SCHEDULES (1), QWEN_EMU_SCHEDULE (-1: kinds take turns; 0, 1, 2: that one), QWEN_EMU_PREEMPT (64: about one access in 64), QWEN_EMU_RACES (1: check every launch; n: a kernel's
// first 4 launches and then one in n; 0: none), QWEN_EMU_SEED (1), QWEN_EMU_MATH (0: the host's math),
// QWEN_EMU_VERBOSE (1: a summary at exit), QWEN_EMU_LEAKS (0: no leak check).
#pragma once
#define QWEN_CUDA_EMU 1  // tests may shorten what takes long on the emulator

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>

// `__shared__ T name;` is rewritten by the Makefile into a qwen_emu::static_smem call; one left over is an error.
#undef __shared__
#define __shared__ _Pragma("GCC error \"__shared__ declarations must go through the Makefile's EMU_REWRITE\"")
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace qwen_emu {

// ---- settings ----

struct Options {
    int schedules = 1;          // QWEN_EMU_SCHEDULES: runs of every launch, compared (1: one, no comparison)
    int schedule = -1;          // QWEN_EMU_SCHEDULE: 0 in order, 1 reversed, 2 shuffled (-1: they take turns);
                                // with several runs, of the runs after the first (which is in order)
    unsigned preempt = 64;      // QWEN_EMU_PREEMPT: preempt about one memory access in this many (0: never)
    int races = 1;              // QWEN_EMU_RACES: check every launch (1), the first launches of each kernel and
                                // then one in this many, or none (0); the schedules and poison stay
    uint64_t seed = 1;          // QWEN_EMU_SEED: schedules and the device math's deviations
    int math_ulp = 1;           // QWEN_EMU_MATH=0: the host's math in kernels (1: the CUDA error bounds)
};
Options& options();  // read from the environment once; tests may change them

// ---- the running thread ----

struct Fiber;
struct Block;
extern Fiber* g_fiber;  // the emulated thread now running
extern Block* g_block;  // its block

struct Coords {
    uint3 thread, block;
    dim3 block_dim, grid_dim;
};
extern const Coords* g_coords;  // the running thread's; null outside a kernel
inline const Coords& coords() { return *g_coords; }
int lane_id();

// __syncthreads, __syncthreads_or; `where` (file:line) tells barriers apart: all threads must meet at one
int sync_block_or(int v, const char* where);
void sync_warp();                 // __syncwarp: a warp barrier that also orders the lanes' memory accesses
// A shuffle: every lane of the running warp offers `bytes` (<= 16) at `value`; returns lane src's offer.
const void* warp_exchange(const void* value, size_t bytes, int src);
void* dynamic_smem_base();        // this block's dynamic shared memory
// This block's copy of the static __shared__ variable `key` (one per declaration), 0xff bytes at block start.
void* static_smem_at(const void* key, size_t bytes, size_t align, const char* name);
[[noreturn]] void fault(const char* fmt, ...);  // prints the kernel and thread, then aborts

// Atomics: begin checks and records an atomic access of `bytes` at p (and may preempt first); the
// read-modify-write between begin and end is not seen as plain loads and stores; end sees the value returned.
// When a launch runs several times, the order of its atomics is its own to choose: an integer add, min, max,
// and, or leaves the same value in memory in any order, so its later runs return what the first run returned
// (an atomic append fills the same slots each time); an exchange or compare-and-swap may leave another value,
// so a launch whose exchanges returned other values is not compared. A float add is compared as it is: its
// order shows in the sum's rounding.
enum AtomicKind { ATOMIC_FLOAT, ATOMIC_COMMUTES, ATOMIC_ORDERED };
void atomic_begin(void* p, size_t bytes);
void atomic_end(void* returned, size_t bytes, AtomicKind kind);

// Scratch memory of the running block that only the emulator sees (CUB's internals), and whether a thread
// has filled it since the block's last barrier (then the others read it instead of computing it again).
void* block_scratch(size_t bytes, bool* filled);
void block_scratch_filled();
void* warp_scratch(size_t bytes, bool* filled);  // the same for the running warp, since its last warp barrier
void warp_scratch_filled();
// d = a b + c on the running lane's share of the (m, n) accumulator (elements lane, lane + 32, ...), fp32;
// a (m, k) and b (k, n) row-major. Registers only, so outside the load / store checks (and fast).
void mma_share(float* d, const float* a, const float* b, const float* c, int m, int n, int k);

// The device's value of a math function: inside a kernel, `exact` (the host's) moved by up to max_ulp ulp as a
// seeded hash of the arguments; outside a kernel, `exact`.
float device_math(float exact, float x, float y, int fn, int max_ulp);

// ---- launches ----

using Body = std::function<void()>;
// Runs (or, on a capturing stream, records) a grid of `body`. Shape and shared-memory checks first: a bad launch
// sets the sticky error that cudaGetLastError returns, as the runtime does.
void submit(const void* kernel, const char* name, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Body body);

template <typename... P>
struct Launcher {
    void (*kernel)(P...);
    const char* name;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    template <typename... A>
    void operator()(A&&... a) const {
        // The arguments are copied now, as a real launch copies them into the kernel's parameter space.
        std::tuple<std::decay_t<P>...> args(std::forward<A>(a)...);
        void (*k)(P...) = kernel;
        submit(reinterpret_cast<const void*>(k), name, grid, block, smem, stream, [k, args] { std::apply(k, args); });
    }
};
template <typename... P>
Launcher<P...> launch(void (*kernel)(P...), const char* name, dim3 grid, dim3 block, size_t smem = 0,
                      cudaStream_t stream = nullptr) {
    return Launcher<P...>{kernel, name, grid, block, smem, stream};
}

template <typename T>
T* dynamic_smem() {
    return static_cast<T*>(dynamic_smem_base());
}
template <typename T>
T& static_smem(const void* key, const char* name) {
    static_assert(std::is_trivially_default_constructible<T>::value, "__shared__ variables cannot be constructed");
    return *static_cast<T*>(static_smem_at(key, sizeof(T), alignof(T), name));
}

// Lane i's value of v after every lane of the warp has offered its own.
template <typename T>
T exchange(T v, int src) {
    static_assert(sizeof(T) <= 16 && std::is_trivially_copyable<T>::value, "shuffle of a type the emulator cannot move");
    T r;
    memcpy(&r, warp_exchange(&v, sizeof(T), src), sizeof(T));
    return r;
}

template <typename T, typename F>
T atomic_rmw(T* p, F f, bool commutes = true) {
    atomic_begin(p, sizeof(T));
    T old = *p;
    *p = f(old);
    atomic_end(&old, sizeof(T), !std::is_integral<T>::value ? ATOMIC_FLOAT : commutes ? ATOMIC_COMMUTES : ATOMIC_ORDERED);
    return old;
}

}  // namespace qwen_emu

#define threadIdx (::qwen_emu::coords().thread)
#define blockIdx (::qwen_emu::coords().block)
#define blockDim (::qwen_emu::coords().block_dim)
#define gridDim (::qwen_emu::coords().grid_dim)

#define QWEN_EMU_STR2(x) #x
#define QWEN_EMU_STR(x) QWEN_EMU_STR2(x)
#define __syncthreads() ((void)::qwen_emu::sync_block_or(0, __FILE__ ":" QWEN_EMU_STR(__LINE__)))
#define __syncthreads_or(v) ::qwen_emu::sync_block_or((v), __FILE__ ":" QWEN_EMU_STR(__LINE__))
inline void __syncwarp(unsigned = 0xffffffffu) { qwen_emu::sync_warp(); }

// Shuffles within segments of `width` lanes; a source outside the segment yields the caller's own value.
// A shuffle moves registers only: it does not order memory accesses (CUDA's __syncwarp does).
template <typename T>
T __shfl_sync(unsigned, T v, int src, int width = 32) {
    int lane = qwen_emu::lane_id(), base = lane & ~(width - 1);
    return qwen_emu::exchange(v, base + (src & (width - 1)));
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {  // a later segment yields the own value
    int lane = qwen_emu::lane_id(), src = lane ^ mask;
    return qwen_emu::exchange(v, src <= (lane | (width - 1)) ? src : lane);
}
template <typename T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    int lane = qwen_emu::lane_id(), src = lane + int(delta);
    return qwen_emu::exchange(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <typename T>
T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
    int lane = qwen_emu::lane_id(), src = lane - int(delta);
    return qwen_emu::exchange(v, src >= (lane & ~(width - 1)) ? src : lane);
}

// Loads with cache hints are plain loads here.
template <typename T>
T __ldcs(const T* p) {
    return *p;
}
template <typename T>
T __ldg(const T* p) {
    return *p;
}

inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i) { return __uint_as_float(unsigned(i)); }
inline int __float_as_int(float f) { return int(__float_as_uint(f)); }

// ---- device math: the host's function, then the device's deviation (CUDA's documented error bounds) ----
namespace qwen_emu {
enum MathFn { M_EXP = 1, M_EXP2, M_LOG, M_LOG2, M_SIN, M_COS, M_TANH, M_POW, M_ERF, M_RSQRT, M_FEXP, M_FLOG, M_FDIV };
inline float dev_expf(float x) { return device_math((expf)(x), x, 0, M_EXP, 2); }
inline float dev_exp2f(float x) { return device_math((exp2f)(x), x, 0, M_EXP2, 2); }
inline float dev_logf(float x) { return device_math((logf)(x), x, 0, M_LOG, 1); }
inline float dev_log2f(float x) { return device_math((log2f)(x), x, 0, M_LOG2, 1); }
inline float dev_sinf(float x) { return device_math((sinf)(x), x, 0, M_SIN, 2); }
inline float dev_cosf(float x) { return device_math((cosf)(x), x, 0, M_COS, 2); }
inline void dev_sincosf(float x, float* s, float* c) {
    *s = dev_sinf(x);
    *c = dev_cosf(x);
}
inline float dev_tanhf(float x) { return device_math((tanhf)(x), x, 0, M_TANH, 2); }
inline float dev_powf(float x, float y) { return device_math((powf)(x, y), x, y, M_POW, 4); }
inline float dev_erff(float x) { return device_math((erff)(x), x, 0, M_ERF, 2); }
}  // namespace qwen_emu
#define expf(x) ::qwen_emu::dev_expf(x)
#define exp2f(x) ::qwen_emu::dev_exp2f(x)
#define logf(x) ::qwen_emu::dev_logf(x)
#define log2f(x) ::qwen_emu::dev_log2f(x)
#define sinf(x) ::qwen_emu::dev_sinf(x)
#define cosf(x) ::qwen_emu::dev_cosf(x)
#define sincosf(x, s, c) ::qwen_emu::dev_sincosf(x, s, c)
#define tanhf(x) ::qwen_emu::dev_tanhf(x)
#define powf(x, y) ::qwen_emu::dev_powf(x, y)
#define erff(x) ::qwen_emu::dev_erff(x)
inline float rsqrtf(float x) { return qwen_emu::device_math(1.0f / sqrtf(x), x, 0, qwen_emu::M_RSQRT, 2); }
// The fast intrinsics: __expf is off by up to 2 + floor(|1.173 x|) ulp, __logf by 3 (CUDA's bounds), capped at 64.
inline float __expf(float x) {
    return qwen_emu::device_math((expf)(x), x, 0, qwen_emu::M_FEXP, 2 + int(std::min(62.0f, std::fabs(1.173f * x))));
}
inline float __logf(float x) { return qwen_emu::device_math((logf)(x), x, 0, qwen_emu::M_FLOG, 3); }
inline float __sinf(float x) { return qwen_emu::dev_sinf(x); }
inline float __cosf(float x) { return qwen_emu::dev_cosf(x); }
inline void __sincosf(float x, float* s, float* c) { qwen_emu::dev_sincosf(x, s, c); }
inline float __powf(float x, float y) { return qwen_emu::dev_powf(x, y); }
inline float __fdividef(float x, float y) { return qwen_emu::device_math(x / y, x, y, qwen_emu::M_FDIV, 2); }

// The runtime's typed overloads (nvcc declares them only for CUDA sources).
template <typename T>
cudaError_t cudaFuncSetAttribute(T* kernel, cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
template <typename T>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, T* kernel) {
    return cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(kernel));
}

// Atomics: checked against the plain accesses of other threads, never against each other.
template <typename T>
T atomicMin(T* p, T v) {
    return qwen_emu::atomic_rmw(p, [v](T old) { return std::min(old, v); });
}
template <typename T>
T atomicMax(T* p, T v) {
    return qwen_emu::atomic_rmw(p, [v](T old) { return std::max(old, v); });
}
template <typename T>
T atomicAdd(T* p, T v) {
    return qwen_emu::atomic_rmw(p, [v](T old) { return T(old + v); });
}
template <typename T>
T atomicSub(T* p, T v) {
    return qwen_emu::atomic_rmw(p, [v](T old) { return T(old - v); });
}
template <typename T>
T atomicExch(T* p, T v) {
    return qwen_emu::atomic_rmw(p, [v](T) { return v; }, false);
}
template <typename T>
T atomicCAS(T* p, T compare, T v) {
    return qwen_emu::atomic_rmw(p, [compare, v](T old) { return old == compare ? v : old; }, false);
}
template <typename T>
T atomicOr(T* p, T v) {
    return qwen_emu::atomic_rmw(p, [v](T old) { return T(old | v); });
}
template <typename T>
T atomicAnd(T* p, T v) {
    return qwen_emu::atomic_rmw(p, [v](T old) { return T(old & v); });
}

// CUDA's global min / max overloads (mixed int / unsigned compare as unsigned, as in device code).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(int a, unsigned b) { return min(unsigned(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, unsigned(b)); }
inline unsigned max(int a, unsigned b) { return max(unsigned(a), b); }
inline unsigned max(unsigned a, int b) { return max(a, unsigned(b)); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// ---- warp matrix multiply-accumulate (the part of nvcuda::wmma that qwen.cuh uses) ----
// As on the hardware, each lane owns a share of an accumulator: here the elements lane, lane + 32, ... of the
// row-major tile. mma_sync computes and store_matrix_sync writes only that share, so a lane that reads what
// other lanes stored without a __syncwarp is a race. Loads fill the whole fragment (an input fragment is the
// whole tile in every lane): one lane reads the tile for the warp (the race checks see that lane read all of
// it, as any lane may on the hardware), the others copy it. The _sync operations first wait for every lane of
// the warp (CUDA: "waits until all warp lanes have arrived"), which also orders the lanes' earlier accesses.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
    static constexpr int num_elements = rows * cols;
    float x[rows * cols];  // (rows, cols) row-major, whatever the element type
};

inline float to_float(float v) { return v; }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float to_float(__half v) { return __half2float(v); }

template <typename F, typename T>
void load_tile(F& f, const T* p, unsigned ldm, bool col_major) {
    __syncwarp();
    if (ldm % (16 / sizeof(T)) != 0 || reinterpret_cast<uintptr_t>(p) % 32 != 0)
        qwen_emu::fault("wmma::load_matrix_sync: ldm %u or the pointer is misaligned", ldm);
    bool filled = false;
    float* tile = static_cast<float*>(qwen_emu::warp_scratch(sizeof f.x, &filled));
    if (!filled) {
        for (int r = 0; r < F::rows; r++)
            for (int c = 0; c < F::cols; c++)
                tile[r * F::cols + c] = to_float(col_major ? p[size_t(c) * ldm + r] : p[size_t(r) * ldm + c]);
        qwen_emu::warp_scratch_filled();
    }
    memcpy(f.x, tile, sizeof f.x);
}
template <typename Use, int M, int N, int K, typename T, typename L, typename P>
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
    static_assert(!std::is_same<Use, accumulator>::value, "an accumulator load needs a layout");
    load_tile(f, p, ldm, std::is_same<L, col_major>::value);
}
template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t layout) {
    load_tile(f, p, ldm, layout == mem_col_major);
}
template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
    __syncwarp();
    if (ldm % 4 != 0 || reinterpret_cast<uintptr_t>(p) % 32 != 0)
        qwen_emu::fault("wmma::store_matrix_sync: ldm %u or the pointer is misaligned", ldm);
    for (int i = qwen_emu::lane_id(); i < M * N; i += 32) {
        int r = i / N, c = i % N;
        p[layout == mem_col_major ? size_t(c) * ldm + r : size_t(r) * ldm + c] = f.x[i];
    }
}
template <typename F>
void fill_fragment(F& f, float v) {
    for (float& e : f.x) e = v;
}
// d = a b + c, products and sums in fp32 (the tensor cores keep at least fp32 for bf16 inputs)
template <int M, int N, int K, typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
    __syncwarp();
    qwen_emu::mma_share(d.x, a.x, b.x, c.x, M, N, K);
}

}  // namespace wmma
}  // namespace nvcuda

// ---- the parts of CUB that qwen.cuh uses ----
namespace cub {

// A value for threads other than 0 when CUB leaves the result undefined there: NaN for floating types.
template <typename T>
T poisoned(T v) {
    if constexpr (std::is_floating_point<T>::value) return std::numeric_limits<T>::quiet_NaN();
    else return v;
}

template <typename T, int BLOCK>
struct BlockReduce {
    struct TempStorage {
        T v[BLOCK];
    };
    TempStorage& s;
    explicit BlockReduce(TempStorage& t) : s(t) {}
    // The reduction, valid in thread 0 only (as CUB documents). No barrier after: reusing the storage needs one.
    template <typename Op>
    T Reduce(T x, Op op) {
        int tid = int(threadIdx.x), n = int(blockDim.x);
        if (n != BLOCK) qwen_emu::fault("cub::BlockReduce<%d> in a block of %d threads", BLOCK, n);
        s.v[tid] = x;
        __syncthreads();
        if (tid != 0) return poisoned(x);
        T r = s.v[0];
        for (int i = 1; i < n; i++) r = op(r, s.v[i]);
        return r;
    }
    T Sum(T x) {
        return Reduce(x, [](T a, T b) { return a + b; });
    }
};

template <typename T, int BLOCK>
struct BlockScan {
    struct TempStorage {
        T v[BLOCK];
    };
    TempStorage& s;
    explicit BlockScan(TempStorage& t) : s(t) {}
    // out = x[0] + ... + x[tid], total = x[0] + ... + x[n-1], in every thread. The first thread after the
    // barrier reads every partial into the emulator's scratch (as CUB's threads read each other's partials),
    // the others take theirs from it. No barrier after: reusing the storage needs one, as with CUB.
    void InclusiveSum(T x, T& out, T& total) {
        int tid = int(threadIdx.x), n = int(blockDim.x);
        if (n != BLOCK) qwen_emu::fault("cub::BlockScan<%d> in a block of %d threads", BLOCK, n);
        s.v[tid] = x;
        __syncthreads();
        bool filled = false;
        T* prefix = static_cast<T*>(qwen_emu::block_scratch(sizeof(T) * BLOCK, &filled));
        if (!filled) {
            T acc = T(0);
            for (int i = 0; i < n; i++) prefix[i] = acc = acc + s.v[i];
            qwen_emu::block_scratch_filled();
        }
        out = prefix[tid];
        total = prefix[n - 1];
    }
};

struct DeviceRadixSort {
    // Stable sort of (key, value) pairs by key, largest first, on all bits of a float key (CUB's order:
    // -0 sorts below +0). Asked with d_temp == nullptr, reports the scratch it needs.
    static cudaError_t SortPairsDescending(void* d_temp, size_t& temp_bytes, const float* keys_in, float* keys_out,
                                           const int* values_in, int* values_out, int n, int begin_bit = 0,
                                           int end_bit = 32, cudaStream_t stream = nullptr);
};

}  // namespace cub
