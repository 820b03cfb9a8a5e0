// cuda_emu.hpp: a CPU stand-in for the GPU, so that the CUDA code of qwen.cuh runs (slowly) and is tested on
// machines without one. The build force-includes this header, compiles qwen.cuh as plain C++ after rewriting
// `k<<<grid, block, smem, stream>>>(args)` and `extern __shared__ T name[]` (see the Makefile's emu rules), and
// links cuda_emu.cpp in place of the CUDA runtime and cuBLAS.
//
// provides:
//   threadIdx, blockIdx, blockDim, gridDim       the running emulated thread's coordinates
//   __syncthreads, __syncthreads_or, __syncwarp  block and warp barriers
//   __shfl_sync, __shfl_xor_sync, __shfl_up_sync, __shfl_down_sync   warp exchanges
//   device intrinsics qwen.cuh uses              __ldcs, __ldg, bit casts, rsqrtf, atomics, min / max
//   qwen_emu::launch(kernel, name, grid, block, smem, stream)(args...)   what a <<<>>> launch becomes
//   qwen_emu::dynamic_smem<T>()                  what `extern __shared__ T name[]` becomes
//   nvcuda::wmma fragments, load / store / fill / mma_sync            the tensor-core API qwen.cuh uses
//   cub::BlockReduce, cub::BlockScan, cub::DeviceRadixSort::SortPairsDescending   the CUB that qwen.cuh uses
//
// The model of the hardware: each thread of a block is a fiber on one host thread and the blocks of a grid run
// one after another. A thread runs until it reaches a barrier; a barrier opens when every live thread of the
// block (for a warp operation: every lane of the warp) has arrived. What the hardware leaves undefined is made
// loud: a barrier that can never open (a __syncthreads in divergent code, threads meeting at different
// __syncthreads, a thread exiting while others wait, a shuffle after some lanes exited) aborts with the
// kernel's name; bad launch shapes and shared memory past the opt-in fail the launch; dynamic shared memory
// starts as NaN bytes; CUB's block results are poisoned outside thread 0. Every operation is synchronous;
// streams only matter for graph capture, which records launches and copies for replay.
// What it cannot show: races between blocks (they never overlap), memory ordering, the hardware's fragment
// layouts and speed; static __shared__ variables start at zero once and keep their values between blocks,
// where the hardware leaves them undefined. The emulated device is an sm_90 with 8 SMs; tests that matter for
// smaller GPUs lower Launch::smem_optin themselves.
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

// Device-side storage classes: one static per kernel instantiation serves every block, as blocks run in turn.
#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace qwen_emu {

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
void sync_warp();                 // __syncwarp
// A shuffle: every lane of the running warp offers `bytes` (<= 16) at `value`; returns lane src's offer.
const void* warp_exchange(const void* value, size_t bytes, int src);
void* dynamic_smem_base();        // this block's dynamic shared memory
[[noreturn]] void fault(const char* fmt, ...);  // prints the kernel and thread, then aborts

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

// Lane i's value of v after every lane of the warp has offered its own.
template <typename T>
T exchange(T v, int src) {
    static_assert(sizeof(T) <= 16 && std::is_trivially_copyable<T>::value, "shuffle of a type the emulator cannot move");
    T r;
    memcpy(&r, warp_exchange(&v, sizeof(T), src), sizeof(T));
    return r;
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
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __int_as_float(int i) { return __uint_as_float(unsigned(i)); }
inline int __float_as_int(float f) { return int(__float_as_uint(f)); }

// The runtime's typed overloads (nvcc declares them only for CUDA sources).
template <typename T>
cudaError_t cudaFuncSetAttribute(T* kernel, cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
template <typename T>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, T* kernel) {
    return cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(kernel));
}

// Atomics: the threads run one at a time, so a read-modify-write is atomic by construction.
template <typename T>
T atomicMin(T* p, T v) {
    T old = *p;
    *p = std::min(old, v);
    return old;
}
template <typename T>
T atomicMax(T* p, T v) {
    T old = *p;
    *p = std::max(old, v);
    return old;
}
template <typename T>
T atomicAdd(T* p, T v) {
    T old = *p;
    *p = old + v;
    return old;
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
// other lanes stored without a __syncwarp sees stale data here, as it may on the hardware. Loads fill the
// whole fragment (an input fragment is the whole tile in every lane).
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
    if (ldm % (16 / sizeof(T)) != 0 || reinterpret_cast<uintptr_t>(p) % 32 != 0)
        qwen_emu::fault("wmma::load_matrix_sync: ldm %u or the pointer is misaligned", ldm);
    for (int r = 0; r < F::rows; r++)
        for (int c = 0; c < F::cols; c++)
            f.x[r * F::cols + c] = to_float(col_major ? p[size_t(c) * ldm + r] : p[size_t(r) * ldm + c]);
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
    for (int e = qwen_emu::lane_id(); e < M * N; e += 32) {
        int i = e / N, j = e % N;
        float s = c.x[e];
        for (int k = 0; k < K; k++) s += a.x[i * K + k] * b.x[k * N + j];
        d.x[e] = s;  // d may alias c: element e of c was read above
    }
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
    // out = x[0] + ... + x[tid], total = x[0] + ... + x[n-1], in every thread.
    void InclusiveSum(T x, T& out, T& total) {
        int tid = int(threadIdx.x), n = int(blockDim.x);
        if (n != BLOCK) qwen_emu::fault("cub::BlockScan<%d> in a block of %d threads", BLOCK, n);
        s.v[tid] = x;
        __syncthreads();
        T acc = T(0);
        for (int i = 0; i < n; i++) {
            acc = acc + s.v[i];
            if (i == tid) out = acc;
        }
        total = acc;  // no barrier after: reusing the storage needs one, as with CUB
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
