// sample_candidates: filtered sampling (top-k, top-p, min-p) that sorts only the likely tokens. A candidate for the
// engine's sampler (which softmaxes and radix-sorts the whole vocabulary), kept here until it is measured on a GPU
// (./dev/bin/sample 1 vs 2); the tests run it on every build (test/test_gpu.cu: it must draw exactly what the full
// path draws, or hand over to it). To promote it: move this file's body into the sampling section of qwen.cuh and
// try it first in GpuEngine::sample, taking the full path when it answers SAMPLE_FALLBACK.
#pragma once
#include "../qwen.cuh"

namespace qwen {
namespace gpu {

// As in the CPU Sampler (Sampler::keep_above_cutoff_), take the candidates p >= cutoff = p_max / 1024 (with
// min-p: min_p * p_max). Every other token is less probable than all of them, so the top-p prefix found among
// them is the true one when they hold at least top_p of the mass, and the top-k set is among them when there
// are at least k. One pass over the vocabulary (many blocks) collects those few candidates and the softmax
// normaliser; one block sorts them in shared memory and selects. No radix sort of the vocabulary, no
// single-block pass over it. When the candidates overflow SAMPLE_CAP, are fewer than k, or hold too little
// mass, the selection answers SAMPLE_FALLBACK and the caller takes the full path (softmax, radix sort,
// select_token).

constexpr int SAMPLE_CAP = 2048;         // candidates one block sorts in shared memory (a power of two)
constexpr int SAMPLE_MAX_BLOCKS = 1024;  // blocks of the candidate pass
constexpr int SAMPLE_FALLBACK = -3;

// What the candidate pass accumulates (count zeroed before it runs).
struct Candidates {
    int count;                         // tokens with e >= e_min (only the first SAMPLE_CAP are stored)
    double part[SAMPLE_MAX_BLOCKS];    // per block: sum of e = exp((x - max) / T) over its tokens
};

// e_i = exp((x_i - x_max) / T), with x_max = x[*argmax]; part[block] = its sum of e_i (added up in a fixed order
// later, so that a seed draws the same token every run); tokens with e_i >= e_min appended to (cand_e, cand_id)
// in any order.   grid-stride, grid <= SAMPLE_MAX_BLOCKS, block 256
static __global__ void __launch_bounds__(256)
    candidates_kernel(const float* x, int n, const int* argmax, float temperature, float e_min, float* cand_e,
                      int* cand_id, Candidates* c) {
    int a = *argmax;
    if (a < 0) return;  // unusable logits (the whole grid returns): the caller reports the argmax's verdict
    float m = x[a];
    double s = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float e = expf((x[i] - m) / temperature);  // the Sampler's softmax numerator, bit for bit
        s += e;
        if (e >= e_min) {
            int k = atomicAdd(&c->count, 1);
            if (k < SAMPLE_CAP) cand_e[k] = e, cand_id[k] = i;
        }
    }
    using Reduce = cub::BlockReduce<double, 256>;
    __shared__ typename Reduce::TempStorage tmp;
    s = Reduce(tmp).Sum(s);
    if (threadIdx.x == 0) c->part[blockIdx.x] = s;
}

// Sorts the candidates by (p desc, id asc) with a bitonic sort of 64-bit keys (p's bits, then the complement of
// the id), keeps those with p >= cutoff exactly as the Sampler computes both, then filter_and_draw over them
// (f.top_k: 0 when off).   grid (1), block SAMPLE_THREADS
static __global__ void __launch_bounds__(SAMPLE_THREADS, 1)
    select_candidates_kernel(const float* cand_e, const int* cand_id, const Candidates* c, int n_parts,
                             SampleFilter f, int* out) {
    __shared__ unsigned long long key[SAMPLE_CAP];
    __shared__ float p[SAMPLE_CAP];  // kept probabilities, most probable first
    __shared__ int ids[SAMPLE_CAP];
    __shared__ int kept_s;
    __shared__ double total_s;
    int n = c->count, tid = threadIdx.x;
    if (n < 1 || n > SAMPLE_CAP) {  // uniform; none: unusable logits, which the argmax's verdict reports
        if (tid == 0) *out = SAMPLE_FALLBACK;
        return;
    }
    if (tid == 0) {
        double t = 0;
        for (int b = 0; b < n_parts; b++) t += c->part[b];
        total_s = t;
        kept_s = 0;
    }
    __syncthreads();
    float inv_sum = float(1.0 / total_s);  // p_max = 1 * inv_sum: the arg-max's e is exp(0)
    float cutoff = f.min_p > 0.0f ? f.min_p * inv_sum : inv_sum / 1024.0f;
    int N = 1;
    while (N < n) N *= 2;
    for (int i = tid; i < N; i += blockDim.x) {
        float pi = i < n ? cand_e[i] * inv_sum : 0.0f;
        key[i] = i < n && pi >= cutoff ? (uint64_t(__float_as_uint(pi)) << 32) | ~uint32_t(cand_id[i]) : 0;
    }
    __syncthreads();
    for (int k = 2; k <= N; k *= 2)  // bitonic sort, descending
        for (int j = k / 2; j > 0; j /= 2) {
            for (int i = tid; i < N; i += blockDim.x) {
                int o = i ^ j;
                if (o <= i) continue;
                unsigned long long a = key[i], b = key[o];
                if ((i & k) == 0 ? a < b : a > b) key[i] = b, key[o] = a;
            }
            __syncthreads();
        }
    for (int i = tid; i < N; i += blockDim.x) {  // the kept ones (non-zero keys) come first
        if (key[i] && (i + 1 == N || !key[i + 1])) kept_s = i + 1;
        if (i < n) p[i] = __uint_as_float(uint32_t(key[i] >> 32)), ids[i] = int(~uint32_t(key[i]));
    }
    __syncthreads();
    int keep = kept_s;  // >= 1: the arg-max itself has p = p_max >= cutoff
    // Top-k needs k candidates (then the k-th and its ties are among them); top-p alone needs top_p of the mass.
    bool short_of_k = f.top_k > 0 && keep < f.top_k;
    if (short_of_k || (f.top_k == 0 && f.min_p <= 0.0f && block_sum_prefix(p, keep) < double(f.top_p))) {
        if (tid == 0) *out = SAMPLE_FALLBACK;  // uniform
        return;
    }
    int j = filter_and_draw(p, keep, f, f.top_k > 0);
    if (tid == 0) *out = ids[j];
}

// x: (n) fp32 logits; argmax: the device int argmax() wrote; cand_e, cand_id: (SAMPLE_CAP) scratch; c: one
// Candidates; out: the chosen id or SAMPLE_FALLBACK. For temperature > 0 with some filter (top-k, top-p, min-p).
inline void sample_candidates(const float* x, int n, const int* argmax, float temperature, SampleFilter f,
                              float* cand_e, int* cand_id, Candidates* c, int* out, const Launch& l) {
    if (n < 1 || !(temperature > 0)) fail("sample_candidates: n %d must be >= 1 and temperature %g > 0", n, temperature);
    if (f.top_k >= n) f.top_k = 0;  // keeps every token: off
    // a little below the Sampler's cutoff in e (p = e / total): every token it keeps is a candidate
    float e_min = 0.999f * (f.min_p > 0.0f ? f.min_p : 1.0f / 1024.0f);
    int blocks = std::min({ceil_div(n, 256), 2 * l.sm_count, SAMPLE_MAX_BLOCKS});
    CUDA_CHECK(cudaMemsetAsync(&c->count, 0, sizeof(int), l.stream));
    candidates_kernel<<<blocks, 256, 0, l.stream>>>(x, n, argmax, temperature, e_min, cand_e, cand_id, c);
    CUDA_CHECK(cudaGetLastError());
    select_candidates_kernel<<<1, SAMPLE_THREADS, 0, l.stream>>>(cand_e, cand_id, c, blocks, f, out);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace gpu
}  // namespace qwen
