// Shared pieces of the kernel workbench: device buffers of random data, event timing, error measures.
// Each dev/<op>.cu includes this, defines its versions, checks them against a CPU reference and times them.
// (namespace bench: the same as bench.hpp's, whose copy_bandwidth it uses.)
#pragma once
#include "../bench.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

namespace bench {

using qwen::bf16;

// p[i] = scale * (2u - 1), u uniform in [0, 1) from a hash of (seed, i)   grid-stride, block 256
static __global__ void fill_uniform_kernel(bf16* p, size_t n, uint64_t seed, float scale) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        float u = float(qwen::mix64(seed * 0x9E3779B97F4A7C15ull + i) >> 40) * (1.0f / 16777216.0f);
        p[i] = qwen::gpu::f2bf(scale * (2.0f * u - 1.0f));
    }
}

// Random bf16 values in [-scale, scale), made on the device (fast for gigabyte-sized buffers).
inline bf16* random_bf16(size_t n, uint64_t seed, float scale, const qwen::gpu::Launch& l) {
    bf16* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, n * sizeof(bf16)));
    fill_uniform_kernel<<<4 * l.sm_count, 256, 0, l.stream>>>(p, n, seed, scale);
    CUDA_CHECK(cudaGetLastError());
    return p;
}

inline std::vector<float> random_f32(size_t n, uint64_t seed) {
    std::mt19937 g{uint32_t(seed)};
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v) x = d(g);
    return v;
}

template <typename T>
T* to_device(const std::vector<T>& v) {
    T* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, v.size() * sizeof(T)));
    CUDA_CHECK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return p;
}

template <typename T>
std::vector<T> to_host(const T* p, size_t n) {
    std::vector<T> v(n);
    CUDA_CHECK(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
}

// sum (got - ref)^2 / sum ref^2 (infinite when got has a NaN)
inline double nmse(const std::vector<float>& got, const std::vector<double>& ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); i++) {
        if (std::isnan(got[i])) return INFINITY;
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return num / den;
}

// Median time of `reps` calls of fn(i) in milliseconds, measured with events after `warmup` calls.
// fn gets the repetition index, so it can rotate among several inputs (a working set larger than L2).
inline float median_ms(const std::function<void(int)>& fn, int reps = 50, int warmup = 5) {
    for (int i = 0; i < warmup; i++) fn(i);
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    std::vector<float> ms;
    for (int i = 0; i < reps; i++) {
        CUDA_CHECK(cudaEventRecord(a));
        fn(i);
        CUDA_CHECK(cudaEventRecord(b));
        CUDA_CHECK(cudaEventSynchronize(b));
        float t = 0;
        CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
        ms.push_back(t);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

// How many copies of a `bytes`-sized input make a working set of at least 4x the L2 cache.
inline int copies_to_beat_l2(size_t bytes) {
    int dev = 0, l2 = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    return int(std::min<size_t>(64, std::max<size_t>(1, 4 * size_t(l2) / bytes + 1)));
}

// Device-to-device copy bandwidth (bytes read + written), the ceiling quoted next to each result.
inline double copy_gb_s() { return copy_bandwidth() / 1e9; }

inline int version_arg(int argc, char** argv, int n_versions) {
    int v = argc > 1 ? atoi(argv[1]) : n_versions;
    if (v < 1 || v > n_versions) {
        fprintf(stderr, "usage: %s [version 1..%d] (default: the last)\n", argv[0], n_versions);
        exit(1);
    }
    return v;
}

// Runs a workbench program: a qwen::Error (no device, a failed CUDA call) becomes one line and exit code 1.
inline int run_main(int (*body)(int, char**), int argc, char** argv) {
    try {
        if (!qwen::gpu::device_available()) qwen::fail("no CUDA device");
        return body(argc, argv);
    } catch (const qwen::Error& e) {
        fprintf(stderr, "%s: %s\n", argv[0], e.what());
        return 1;
    }
}

}  // namespace bench
