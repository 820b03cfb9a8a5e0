// qwen.hpp: Qwen language models (Qwen1.5, Qwen2, Qwen2.5, Qwen3 dense; bf16 or GGUF-quantized) in plain C++17.
// Everything but the GPU; qwen.cuh adds the CUDA engine on top of this file.
//
// provides:
//   Error, fail                  the one exception type: every failure throws it with a one-line message
//                                (nothing here exits or prints); vformat, mix64 (splitmix64 bit mixing)
//   bf16, now_seconds            bf16 <-> fp32 conversions (bf16_to_f32, f32_to_bf16); a monotonic clock
//   DType, Tensor, dequantize_row  weight storage types (bf16, f16, f32, llama.cpp's Q8_0 .. Q6_K blocks), a
//                                typed view of a weight matrix, its rows decoded exactly (dequant_q8_0 ..)
//   load_model, load_tokenizer   the memory-mapped, fully validated model file: weights.bin or GGUF, split GGUF
//                                too (Model: Config, ChatInfo, Vocab, Weights of typed views; tensor_table lists
//                                the weights, for_each_weight visits them); parse_model: the same on bytes
//   Tokenizer, StreamDecoder     byte-level BPE that matches Hugging Face token for token; UTF-8-safe streaming
//   utf8_valid, utf8_sanitize    UTF-8 validation and repair (U+FFFD); nfc: Unicode NFC normalisation
//   chat_text, chat_tokens       ChatML prompts of Qwen1.5/2/2.5/3 (Message, ChatOptions: default system
//                                prompt, Qwen3 thinking, tools and tool calls as Qwen2.5/Qwen3 render them)
//   SamplingParams, Sampler      temperature, top-k, top-p, min-p, logit bias, repetition, presence and frequency
//                                penalties, seeded; default_sampling (the checkpoint's defaults), validate; an
//                                optional bit mask of the tokens allowed; log-probabilities (StepLogprobs)
//   Engine, CpuEngine            the model interface (forward checks its arguments once for every engine) and
//                                the CPU reference forward pass (the GPU's spec); ThreadPool, the cpu:: kernels
//   Grammar, GrammarMatcher      structured output: GBNF grammars (grammar_from_gbnf) and the converters from JSON
//                                Schema, json_object, regex and choice lists, run as a pushdown automaton over bytes;
//                                TokenTrie, bind_grammar (TokenGrammar) and GrammarMatcher::allowed give the bit mask
//                                of the tokens allowed next; parse_json (strict, for schemas), python_json (the
//                                templates' tojson); tool_calls_gbnf (calls forced to the tools' schemas)
//   ChatOutputParser             model output -> reasoning, answer and tool calls (ChatPart), streamed or whole
//   Session                      the prefill + decode loop: stop ids and strings (StopMatcher), KV-cache reuse
//                                across turns, grammar-constrained output (GenerateOptions, GenerateResult)
//
// Sections follow the data: common helpers, weight types, the model file (weights.bin, then GGUF), the tokenizer
// and chat prompts, the sampler, the engine interface, the CPU forward pass, structured output (grammars and token
// masks: skip it on a first reading), generation; the generated Unicode tables close the file.
// "id" always means a token id: an index into the vocabulary.
#pragma once

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace qwen {

// ============================================================================
// Common: errors, bf16, the mapped file, timing
// ============================================================================

// Every failure in the library is a qwen::Error carrying one human-readable line.
// Front ends catch it: the CLI prints it and exits 1, the server answers 400.
struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A printf-style message as a string (cut at 1023 bytes: error messages are one line).
inline std::string vformat(const char* fmt, va_list ap) {
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    return buf;
}

// The one fatal-error helper: printf-style message, thrown as qwen::Error.
[[noreturn]] inline void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string msg = vformat(fmt, ap);
    va_end(ap);
    throw Error(msg);
}

// Host code that nvcc also compiles for the device (the one definition serves both).
#if defined(__CUDACC__)
#define QWEN_HOST_DEVICE __host__ __device__
#else
#define QWEN_HOST_DEVICE
#endif

// The splitmix64 finaliser (Steele, Lea, Flood 2014): a bijection of 64-bit words whose output bits all depend
// on all input bits; it turns a seed or a counter into well-mixed random bits.
QWEN_HOST_DEVICE inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// bf16 is the top 16 bits of an IEEE fp32: same exponent range, 8-bit mantissa.
using bf16 = uint16_t;

inline float bf16_to_f32(bf16 h) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Round to nearest, ties to even (what torch's .to(bfloat16) does); NaN stays NaN.
inline bf16 f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return bf16(u >> 16);
}

// Monotonic seconds, for timings (only differences are meaningful).
inline double now_seconds() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// A read-only memory map of a whole file; unmapped when destroyed. The file must not be rewritten in place
// while mapped (cp onto it, truncate): its pages show the new bytes, and a read past a truncation faults
// with SIGBUS, private mapping or not. Replacing it with rename (mv) is safe: the mapping keeps the old file.
struct MappedFile {
    std::string path;
    const uint8_t* data = nullptr;  // (size) bytes, read-only
    size_t size = 0;

    MappedFile() = default;
    explicit MappedFile(const std::string& p) : path(p) {
        // Checked before opening: opening a FIFO for reading waits for a writer, and opening a device can
        // have effects. O_NONBLOCK covers a path swapped for a FIFO in between (fstat then refuses it).
        struct stat st;
        if (::stat(p.c_str(), &st) != 0) fail("%s: cannot open: %s", p.c_str(), strerror(errno));
        if (!S_ISREG(st.st_mode)) fail("%s: not a regular file", p.c_str());
        int fd = ::open(p.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) fail("%s: cannot open: %s", p.c_str(), strerror(errno));
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            ::close(fd);
            fail("%s: not a regular file", p.c_str());
        }
        size = size_t(st.st_size);
        if (size > 0) {
            void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (m == MAP_FAILED) {
                ::close(fd);
                fail("%s: cannot map: %s", p.c_str(), strerror(errno));
            }
            data = static_cast<const uint8_t*>(m);
        }
        ::close(fd);
    }
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    MappedFile(MappedFile&& o) noexcept { *this = std::move(o); }
    MappedFile& operator=(MappedFile&& o) noexcept {
        if (this != &o) {
            unmap();
            path = std::move(o.path);
            data = o.data;
            size = o.size;
            o.data = nullptr;
            o.size = 0;
        }
        return *this;
    }
    ~MappedFile() { unmap(); }

  private:
    void unmap() {
        if (data) munmap(const_cast<uint8_t*>(data), size);
        data = nullptr;
    }
};

// ============================================================================
// Weight types: how a matrix is stored (bf16, fp16, fp32, llama.cpp's quantized blocks) and how it is read
// ============================================================================
// A weight matrix is a Tensor: rows of `cols` values in one storage type. The quantized types are llama.cpp's
// block formats (GGUF files hold them; weights.bin version 2 may hold Q8_0): a row is a sequence of blocks,
// each block stores `block` consecutive values in `bytes` bytes as small integers and one or a few fp16
// scales. Values are recovered exactly as llama.cpp defines them (and as the `gguf` Python package's
// quants.dequantize computes them, bit for bit): fp32 products and sums of the decoded integers and scales,
// in the order written below, never fused into an FMA.
//
// Each decoder reads one "chunk" of a block (a few sub-blocks that share their scale bytes) so that the GPU can
// give each lane one chunk; the CPU decodes a block as all its chunks in order. Layouts are byte offsets
// within a block; all multi-byte fields are little-endian.

// ggml's type numbers (GGUF stores them as they are). Only these are read; others are refused by name.
enum DType : uint32_t {
    DT_F32 = 0, DT_F16 = 1, DT_Q4_0 = 2, DT_Q5_0 = 6, DT_Q5_1 = 7, DT_Q8_0 = 8,
    DT_Q4_K = 12, DT_Q5_K = 13, DT_Q6_K = 14, DT_BF16 = 30,
};

struct DTypeInfo {
    const char* name;  // llama.cpp's name, e.g. "Q4_K"
    int block;         // values per block
    int bytes;         // bytes per block
    int chunk;         // values one decoder call produces (a divisor of block)
};

// The types this build reads; name == nullptr for any other. dtype_name also names the types it does not read.
QWEN_HOST_DEVICE constexpr DTypeInfo dtype_info(uint32_t t) {
    switch (t) {
        case DT_F32: return {"F32", 1, 4, 1};
        case DT_F16: return {"F16", 1, 2, 1};
        case DT_BF16: return {"BF16", 1, 2, 1};
        case DT_Q4_0: return {"Q4_0", 32, 18, 32};
        case DT_Q5_0: return {"Q5_0", 32, 22, 32};
        case DT_Q5_1: return {"Q5_1", 32, 24, 32};
        case DT_Q8_0: return {"Q8_0", 32, 34, 32};
        case DT_Q4_K: return {"Q4_K", 256, 144, 64};
        case DT_Q5_K: return {"Q5_K", 256, 176, 64};
        case DT_Q6_K: return {"Q6_K", 256, 210, 128};
        default: return {nullptr, 0, 0, 0};
    }
}
QWEN_HOST_DEVICE constexpr bool is_quantized(DType t) { return dtype_info(t).block > 1; }

// A type's name for messages: the readable ones, and ggml's other types by their names too.
inline std::string dtype_name(uint32_t t) {
    if (dtype_info(t).name) return dtype_info(t).name;
    static const char* const other[] = {nullptr, nullptr, nullptr,   "Q4_1",    nullptr, nullptr, nullptr,
                                        nullptr, nullptr, "Q8_1",    "Q2_K",    "Q3_K",  nullptr, nullptr,
                                        nullptr, "Q8_K",  "IQ2_XXS", "IQ2_XS",  "IQ3_XXS", "IQ1_S", "IQ4_NL",
                                        "IQ3_S", "IQ2_S", "IQ4_XS",  "I8",      "I16",   "I32",   "I64",
                                        "F64",   "IQ1_M", nullptr,   nullptr,   nullptr, nullptr, "TQ1_0",
                                        "TQ2_0", nullptr, nullptr,   nullptr,   "MXFP4", "NVFP4", "Q1_0"};
    if (t < sizeof other / sizeof other[0] && other[t]) return other[t];
    return "type " + std::to_string(t);
}

// Bytes of one row of `cols` values (cols a multiple of the type's block).
inline uint64_t row_bytes(DType t, uint64_t cols) {
    const DTypeInfo i = dtype_info(t);
    return cols / uint64_t(i.block) * uint64_t(i.bytes);
}

// IEEE half -> fp32, exact (every half is a float). Subnormal halves are man * 2^-24.
QWEN_HOST_DEVICE inline float f16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        float v = float(man) * 5.9604644775390625e-8f;  // 2^-24
        return sign ? -v : v;
    }
    bits = exp == 0x1f ? sign | 0x7f800000u | (man << 13) : sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// fp32 -> IEEE half, round to nearest even (as numpy's astype(float16) and ggml do); overflow goes to inf.
inline uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);      // NaN
    if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);     // >= 65520 rounds to inf
    if (a < 0x38800000u) {                                     // below 2^-14: a subnormal half (or 0)
        float v;
        memcpy(&v, &a, 4);
        return uint16_t(sign | uint32_t(std::nearbyint(v * 16777216.0f)));  // v / 2^-24, ties to even
    }
    uint32_t r = a + 0x0fffu + ((a >> 13) & 1);                // round the 13 dropped bits to nearest even
    return uint16_t(sign | ((r - 0x38000000u) >> 13));
}

QWEN_HOST_DEVICE inline uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
QWEN_HOST_DEVICE inline float rd_f16(const uint8_t* p) { return f16_to_f32(rd16(p)); }

// Q8_0: 32 values in 34 bytes.   +0 f16 d | +2 i8 q[32]
//   x[i] = d * q[i]
template <class Out>
QWEN_HOST_DEVICE inline void dequant_q8_0(const uint8_t* b, int /*chunk*/, Out&& y) {
    float d = rd_f16(b);
    for (int i = 0; i < 32; i++) y(i, d * float(int8_t(b[2 + i])));
}

// Q4_0: 32 values in 18 bytes.   +0 f16 d | +2 u8 q[16]: low nibbles are x[0..16), high nibbles x[16..32)
//   x[i] = d * ((q[i] & 15) - 8),  x[i + 16] = d * ((q[i] >> 4) - 8)
template <class Out>
QWEN_HOST_DEVICE inline void dequant_q4_0(const uint8_t* b, int /*chunk*/, Out&& y) {
    float d = rd_f16(b);
    for (int i = 0; i < 16; i++) {
        y(i, d * float((b[2 + i] & 15) - 8));
        y(i + 16, d * float((b[2 + i] >> 4) - 8));
    }
}

// Q5_0: 32 values in 22 bytes.   +0 f16 d | +2 u32 h (bit i: the 5th bit of x[i]) | +6 u8 q[16] (as Q4_0)
//   x[i] = d * (((q[i] & 15) | h_i << 4) - 16),  x[i + 16] = d * (((q[i] >> 4) | h_{i+16} << 4) - 16)
// Q5_1: 32 values in 24 bytes.   +0 f16 d | +2 f16 m | +4 u32 h | +8 u8 q[16]
//   x[i] = d * ((q[i] & 15) | h_i << 4) + m,  x[i + 16] likewise with the high nibble and h_{i+16}
template <bool MIN, class Out>
QWEN_HOST_DEVICE inline void dequant_q5(const uint8_t* b, Out&& y) {
    float d = rd_f16(b), m = MIN ? rd_f16(b + 2) : 0.0f;
    const uint8_t* hb = b + (MIN ? 4 : 2);
    uint32_t h = uint32_t(hb[0]) | uint32_t(hb[1]) << 8 | uint32_t(hb[2]) << 16 | uint32_t(hb[3]) << 24;
    const uint8_t* q = hb + 4;
    for (int i = 0; i < 16; i++) {
        int lo = (q[i] & 15) | int((h >> i) & 1) << 4, hi = (q[i] >> 4) | int((h >> (i + 16)) & 1) << 4;
        if (MIN) {
            y(i, d * float(lo) + m);
            y(i + 16, d * float(hi) + m);
        } else {
            y(i, d * float(lo - 16));
            y(i + 16, d * float(hi - 16));
        }
    }
}
template <class Out> QWEN_HOST_DEVICE inline void dequant_q5_0(const uint8_t* b, int, Out&& y) { dequant_q5<false>(b, y); }
template <class Out> QWEN_HOST_DEVICE inline void dequant_q5_1(const uint8_t* b, int, Out&& y) { dequant_q5<true>(b, y); }

// The K-quants' 8 sub-block scales and mins (6 bits each) in 12 bytes, for sub-block j = 0..7:
//   j < 4:  sc = s[j] & 63,                        m = s[j + 4] & 63
//   j >= 4: sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4,  m = (s[j + 4] >> 4) | (s[j] >> 6) << 4
QWEN_HOST_DEVICE inline void k_scale_min(const uint8_t* s, int j, float& sc, float& m) {
    int a = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
    int b = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    sc = float(a);
    m = float(b);
}

// Q4_K: 256 values in 144 bytes, 8 sub-blocks of 32 with their own scale and min.
//   +0 f16 d | +2 f16 dmin | +4 u8 scales[12] | +16 u8 q[128]
//   q[32c + i] holds x[64c + i] (low nibble, sub-block 2c) and x[64c + 32 + i] (high nibble, sub-block 2c + 1)
//   x = (d * sc_j) * nibble - (dmin * m_j)            chunk c = 0..3: the 64 values of sub-blocks 2c, 2c + 1
template <class Out>
QWEN_HOST_DEVICE inline void dequant_q4_k(const uint8_t* b, int c, Out&& y) {
    float d = rd_f16(b), dmin = rd_f16(b + 2), sc0, m0, sc1, m1;
    k_scale_min(b + 4, 2 * c, sc0, m0);
    k_scale_min(b + 4, 2 * c + 1, sc1, m1);
    float d0 = d * sc0, n0 = dmin * m0, d1 = d * sc1, n1 = dmin * m1;
    const uint8_t* q = b + 16 + 32 * c;
    for (int i = 0; i < 32; i++) {
        y(i, d0 * float(q[i] & 15) - n0);
        y(i + 32, d1 * float(q[i] >> 4) - n1);
    }
}

// Q5_K: 256 values in 176 bytes: Q4_K plus a 5th bit per value.
//   +0 f16 d | +2 f16 dmin | +4 u8 scales[12] | +16 u8 h[32] | +48 u8 q[128]
//   bit j of h[i] is the 5th bit of value 32j + i (sub-block j); nibbles as in Q4_K
//   x = (d * sc_j) * (nibble | bit << 4) - (dmin * m_j)   chunk c = 0..3: sub-blocks 2c, 2c + 1
template <class Out>
QWEN_HOST_DEVICE inline void dequant_q5_k(const uint8_t* b, int c, Out&& y) {
    float d = rd_f16(b), dmin = rd_f16(b + 2), sc0, m0, sc1, m1;
    k_scale_min(b + 4, 2 * c, sc0, m0);
    k_scale_min(b + 4, 2 * c + 1, sc1, m1);
    float d0 = d * sc0, n0 = dmin * m0, d1 = d * sc1, n1 = dmin * m1;
    const uint8_t *h = b + 16, *q = b + 48 + 32 * c;
    for (int i = 0; i < 32; i++) {
        y(i, d0 * float((q[i] & 15) | ((h[i] >> (2 * c)) & 1) << 4) - n0);
        y(i + 32, d1 * float((q[i] >> 4) | ((h[i] >> (2 * c + 1)) & 1) << 4) - n1);
    }
}

// Q6_K: 256 values in 210 bytes, 16 sub-blocks of 16 with an int8 scale each.
//   +0 u8 ql[128] (low 4 bits) | +128 u8 qh[64] (high 2 bits) | +192 i8 scales[16] | +208 f16 d
//   half c = 0, 1 holds values 128c + 32k + i (k = 0..3, i < 32):
//     low bits:  ql[64c + i] (k = 0: low nibble, k = 2: high), ql[64c + 32 + i] (k = 1: low, k = 3: high)
//     high bits: bits 2k, 2k + 1 of qh[32c + i]
//   x = (d * scales[(128c + 32k + i) / 16]) * (low | high << 4) - 32)       chunk c = 0, 1: one half
template <class Out>
QWEN_HOST_DEVICE inline void dequant_q6_k(const uint8_t* b, int c, Out&& y) {
    float d = rd_f16(b + 208);
    const uint8_t *ql = b + 64 * c, *qh = b + 128 + 32 * c, *sc = b + 192 + 8 * c;
    for (int k = 0; k < 4; k++) {
        const uint8_t* lo = ql + 32 * (k & 1);
        float d0 = d * float(int8_t(sc[2 * k])), d1 = d * float(int8_t(sc[2 * k + 1]));  // values i < 16, i >= 16
        for (int i = 0; i < 32; i++) {
            int q = ((k < 2 ? lo[i] & 15 : lo[i] >> 4) | ((qh[i] >> (2 * k)) & 3) << 4) - 32;
            y(32 * k + i, (i < 16 ? d0 : d1) * float(q));
        }
    }
}

// One chunk (DTypeInfo::chunk values) of a block of a quantized type: y(i, x_i) for each of its values, from
// the decoder of that type. y stores them (dequantize_row) or multiplies them into a dot product (the GPU).
template <class Out>
QWEN_HOST_DEVICE inline void dequant_chunk(DType t, const uint8_t* block, int c, Out&& y) {
    switch (t) {
        case DT_Q8_0: return dequant_q8_0(block, c, y);
        case DT_Q4_0: return dequant_q4_0(block, c, y);
        case DT_Q5_0: return dequant_q5_0(block, c, y);
        case DT_Q5_1: return dequant_q5_1(block, c, y);
        case DT_Q4_K: return dequant_q4_k(block, c, y);
        case DT_Q5_K: return dequant_q5_k(block, c, y);
        case DT_Q6_K: return dequant_q6_k(block, c, y);
        default: return;
    }
}

// A view of a row-major (rows, cols) weight matrix in its storage type, in place in a file or in memory.
// Norm gains and biases are views too, with rows = 1 and always type F32 (the loaders widen other types).
struct Tensor {
    const uint8_t* data = nullptr;  // rows * row_bytes(type, cols) bytes; nullptr: absent
    DType type = DT_F32;
    int rows = 0, cols = 0;

    explicit operator bool() const { return data != nullptr; }
    uint64_t row_bytes() const { return qwen::row_bytes(type, uint64_t(cols)); }
    uint64_t bytes() const { return uint64_t(rows) * row_bytes(); }
    const uint8_t* row(int r) const { return data + uint64_t(r) * row_bytes(); }
    const float* f32() const { return reinterpret_cast<const float*>(data); }  // a vector (type F32)
};

// A decoder's output that stores value i at y[i] (a plain struct, not a lambda: nvcc takes it in host-device code).
struct StoreTo {
    float* y;
    QWEN_HOST_DEVICE void operator()(int i, float v) const { y[i] = v; }
};

// n_blocks blocks of type T into out, each chunk by the decoder of T (the type known at compile time, so the
// decoder is inlined into the loop).
template <DType T>
inline void decode_blocks(const uint8_t* p, int n_blocks, float* out) {
    constexpr DTypeInfo ti = dtype_info(T);
    for (int b = 0; b < n_blocks; b++)
        for (int c = 0; c < ti.block / ti.chunk; c++)
            dequant_chunk(T, p + size_t(b) * ti.bytes, c, StoreTo{out + size_t(b) * ti.block + c * ti.chunk});
}

// out[0..cols) = row r of w as fp32, decoded block by block (exact: see the decoders above).
inline void dequantize_row(const Tensor& w, int r, float* out) {
    const uint8_t* p = w.row(r);
    const int n = w.cols;
    switch (w.type) {
        case DT_F32: memcpy(out, p, size_t(n) * 4); return;
        case DT_BF16:
            for (int i = 0; i < n; i++) out[i] = bf16_to_f32(rd16(p + 2 * i));
            return;
        case DT_F16:
            for (int i = 0; i < n; i++) out[i] = f16_to_f32(rd16(p + 2 * i));
            return;
        case DT_Q8_0: return decode_blocks<DT_Q8_0>(p, n / 32, out);
        case DT_Q4_0: return decode_blocks<DT_Q4_0>(p, n / 32, out);
        case DT_Q5_0: return decode_blocks<DT_Q5_0>(p, n / 32, out);
        case DT_Q5_1: return decode_blocks<DT_Q5_1>(p, n / 32, out);
        case DT_Q4_K: return decode_blocks<DT_Q4_K>(p, n / 256, out);
        case DT_Q5_K: return decode_blocks<DT_Q5_K>(p, n / 256, out);
        case DT_Q6_K: return decode_blocks<DT_Q6_K>(p, n / 256, out);
    }
}

// ============================================================================
// Model file: weights.bin and GGUF, validated and memory-mapped
// ============================================================================
// Two formats hold a model. weights.bin (written by tools/export.py, specified in docs/format.md) holds
// everything the engine needs: the model dims, the chat facts, the tokenizer and the weights (bf16, or Q8_0
// matrices from version 2 on), each per-layer weight stacked over the layers. GGUF (llama.cpp's format; the
// section after this one) holds the same facts as metadata keys and one tensor per layer and weight, each in
// its own type. Either file is mapped read-only and the weights are used in place (no copy); both fill the same
// Model, whose Weights are typed views (Tensor) into the mapping. Because the file comes from outside, every
// field is checked before it is used: each count and length against the bytes that remain, each offset with
// overflow-safe arithmetic, each tensor's shape against the one the config implies. A bad file fails with one
// message naming the file and the field; it never reads out of bounds or allocates more than the file could
// describe. Assumes a little-endian host (x86-64, ARM64).

constexpr char FILE_MAGIC[8] = {'Q', 'W', 'E', 'N', 'B', 'I', 'N', '\0'};
constexpr uint32_t FILE_VERSION = 2;  // 1: bf16 only; 2: matrices may be Q8_0 (dtype 1)
constexpr size_t HEADER_SIZE = 256;
constexpr size_t TENSOR_ENTRY_SIZE = 64;
constexpr size_t TENSOR_NAME_SIZE = 32;
constexpr uint64_t TENSOR_ALIGN = 256;
constexpr int MAX_STOP_IDS = 8;
constexpr uint32_t DTYPE_BF16 = 0;  // weights.bin's dtype codes
constexpr uint32_t DTYPE_Q8_0 = 1;

enum HeaderFlag : uint32_t {
    FLAG_HAS_WEIGHTS = 1u << 0,
    FLAG_TIED = 1u << 1,            // lm_head is token_embd
    FLAG_QKV_BIAS = 1u << 2,        // bqkv present (Qwen2)
    FLAG_QK_NORM = 1u << 3,         // q_norm, k_norm present (Qwen3)
    FLAG_DEFAULT_SYSTEM = 1u << 4,  // strings[1] is the template's default system prompt
    FLAG_THINKING = 1u << 5,        // the chat template has a <think> mode
    FLAG_TOOLS = 1u << 6,           // the chat template renders tools and tool calls (Qwen2.5, Qwen3)
    FLAG_ALL = (1u << 7) - 1,
};

enum Arch : int { ARCH_QWEN2 = 2, ARCH_QWEN3 = 3 };  // Qwen2ForCausalLM (Qwen1.5/2/2.5), Qwen3ForCausalLM

// Regular tokens come from BPE. Added tokens are matched in the text before BPE runs: special ones
// (<|im_end|>) only where the text is trusted (see Tokenizer::encode), the others (Qwen3's <think>) everywhere.
enum TokenKind : uint8_t { TOKEN_REGULAR = 0, TOKEN_SPECIAL = 1, TOKEN_ADDED = 2 };

struct Config {
    int arch = 0;  // ARCH_QWEN2 or ARCH_QWEN3
    int dim = 0, ffn_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
    int vocab_size = 0;   // rows of the embedding / lm_head (may exceed the tokenizer's token count)
    int max_seq_len = 0;  // max_position_embeddings
    double rope_theta = 0;
    float norm_eps = 0;
    bool tied = false, qkv_bias = false, qk_norm = false;
    int q_dim() const { return n_heads * head_dim; }
    int kv_dim() const { return n_kv_heads * head_dim; }
};

struct ChatInfo {                     // facts the front ends need, recorded by the exporter
    std::string model_name;           // e.g. "Qwen2.5-7B-Instruct" (checkpoint folder name)
    bool has_default_system = false;  // none for Qwen3
    std::string default_system;
    bool thinking = false;            // template has a <think> mode (Qwen3)
    bool tools = false;               // template renders tools and tool calls (Qwen2.5, Qwen3)
    std::vector<int> stop_ids;        // (1..8) token ids: eos ids from generation_config + <|im_end|>
    float temperature = NAN, top_p = NAN, repetition_penalty = NAN;  // NAN = not given
    int top_k = -1;                                                  // -1 = not given
};

struct Vocab {                                // the tokenizer as stored in the file
    std::vector<std::string> tokens;          // (n_tokens) raw bytes of each token (byte-level mapping undone)
    std::vector<uint8_t> kind;                // (n_tokens) u8 TokenKind
    std::vector<std::pair<int, int>> merges;  // (n_merges) (left id, right id) pairs, in rank order
};

// Typed views into the mapped file (or memory), row-major. Projections are stored (out, in) and applied as
// y = x @ W^T; each matrix may have its own type (GGUF's mixes differ by layer and weight). Norm gains and
// biases are fp32 vectors (rows = 1, type F32); bias and q/k-norm views are empty where the model has none.
struct Layer {
    Tensor attn_norm;           // (dim) f32
    Tensor wq, wk, wv;          // (q_dim, dim), (kv_dim, dim), (kv_dim, dim)
    Tensor bq, bk, bv;          // (q_dim), (kv_dim), (kv_dim) f32, or empty (Qwen2 family only)
    Tensor q_norm, k_norm;      // (head_dim) f32, or empty (Qwen3 only)
    Tensor wo;                  // (dim, q_dim)
    Tensor ffn_norm;            // (dim) f32
    Tensor w_gate, w_up;        // (ffn_dim, dim) each
    Tensor w_down;              // (dim, ffn_dim)
};

struct Weights {
    Tensor token_embd;          // (vocab_size, dim)
    std::vector<Layer> layers;  // (n_layers)
    Tensor out_norm;            // (dim) f32
    Tensor lm_head;             // (vocab_size, dim); the same view as token_embd when tied
};

struct Model {  // move-only; owns the memory the weights point into
    MappedFile file;                 // the model file mapping (a split GGUF: its first part); empty for weights
                                     // made in memory
    std::vector<MappedFile> parts;   // the other parts of a split GGUF, else empty
    std::vector<uint8_t> owned;      // weights made in memory (synthetic models), else empty
    std::vector<float> widened;      // fp32 copies of the norm gains and biases a file stores in 16 bits
    Config config;
    ChatInfo chat;
    Vocab vocab;
    Weights weights;
    bool has_weights = false;  // false for a tokenizer-only file (Weights empty)
};

// ----------------------------------------------------------------------------
// Tensor table: the one list of the model's weights (both loaders, GPU upload and synthetic weights use it)
// ----------------------------------------------------------------------------

struct TensorSpec {
    enum Kind { MATRIX, NORM, BIAS };  // a projection, an RMSNorm gain, a bias
    const char* name;                  // the weights.bin tensor holding it: entries with one name are stacked
                                       // in one tensor (per layer their rows in table order, layers first)
    const char* gguf;                  // its GGUF name (per-layer ones after "blk.N.")
    Kind kind;
    bool per_layer;                    // one in each Layer, else one in Weights
    int rows, cols;                    // a matrix: (rows, cols); a vector: rows = 1
    using GlobalField = Tensor Weights::*;
    using LayerField = Tensor Layer::*;
    GlobalField global;                // where it lives: a field of Weights (per_layer false) ...
    LayerField layer;                  // ... or of each Layer (per_layer true)

    Tensor& in(Weights& w, int l) const { return per_layer ? w.layers[size_t(l)].*layer : w.*global; }
    const Tensor& in(const Weights& w, int l) const { return per_layer ? w.layers[size_t(l)].*layer : w.*global; }
};

// The weights config c calls for, in weights.bin file order; lm_head only when not tied (tied: it is
// token_embd). The bounds of check_config keep every size derived from these below 2^51.
inline std::vector<TensorSpec> tensor_table(const Config& c) {
    using W = Weights;
    using L = Layer;
    using T = TensorSpec;
    const int dim = c.dim, ffn = c.ffn_dim, hd = c.head_dim, V = c.vocab_size, q = c.q_dim(), kv = c.kv_dim();
    std::vector<T> t = {{"token_embd", "token_embd.weight", T::MATRIX, false, V, dim, &W::token_embd, nullptr},
                        {"attn_norm", "attn_norm.weight", T::NORM, true, 1, dim, nullptr, &L::attn_norm},
                        {"wqkv", "attn_q.weight", T::MATRIX, true, q, dim, nullptr, &L::wq},
                        {"wqkv", "attn_k.weight", T::MATRIX, true, kv, dim, nullptr, &L::wk},
                        {"wqkv", "attn_v.weight", T::MATRIX, true, kv, dim, nullptr, &L::wv}};
    if (c.qkv_bias) {
        t.push_back({"bqkv", "attn_q.bias", T::BIAS, true, 1, q, nullptr, &L::bq});
        t.push_back({"bqkv", "attn_k.bias", T::BIAS, true, 1, kv, nullptr, &L::bk});
        t.push_back({"bqkv", "attn_v.bias", T::BIAS, true, 1, kv, nullptr, &L::bv});
    }
    if (c.qk_norm) {
        t.push_back({"q_norm", "attn_q_norm.weight", T::NORM, true, 1, hd, nullptr, &L::q_norm});
        t.push_back({"k_norm", "attn_k_norm.weight", T::NORM, true, 1, hd, nullptr, &L::k_norm});
    }
    t.push_back({"wo", "attn_output.weight", T::MATRIX, true, dim, q, nullptr, &L::wo});
    t.push_back({"ffn_norm", "ffn_norm.weight", T::NORM, true, 1, dim, nullptr, &L::ffn_norm});
    t.push_back({"w_gate_up", "ffn_gate.weight", T::MATRIX, true, ffn, dim, nullptr, &L::w_gate});
    t.push_back({"w_gate_up", "ffn_up.weight", T::MATRIX, true, ffn, dim, nullptr, &L::w_up});
    t.push_back({"w_down", "ffn_down.weight", T::MATRIX, true, dim, ffn, nullptr, &L::w_down});
    t.push_back({"out_norm", "output_norm.weight", T::NORM, false, 1, dim, &W::out_norm, nullptr});
    if (!c.tied) t.push_back({"lm_head", "output.weight", T::MATRIX, false, V, dim, &W::lm_head, nullptr});
    return t;
}

// Calls fn(spec, layer, view) for every weight view of w that config c calls for (layer -1: model-wide), in
// tensor_table order, layer by layer for per-layer ones. Sizes w.layers to c.n_layers.
template <class W, class F>
inline void for_each_weight(const Config& c, W& w, F&& fn) {
    if constexpr (!std::is_const<W>::value) w.layers.resize(size_t(c.n_layers));
    for (const TensorSpec& s : tensor_table(c))
        for (int l = s.per_layer ? 0 : -1; l < (s.per_layer ? c.n_layers : 0); l++) fn(s, l, s.in(w, l));
}

// ----------------------------------------------------------------------------
// Reader: a bounds-checked cursor over one section of the file
// ----------------------------------------------------------------------------

// Every read checks the bytes left first, so a corrupt count or length fails with a message instead of
// reading past the section.
struct Reader {
    const uint8_t* data;  // (file size) bytes: the whole file
    size_t pos, end;      // cursor and end of the section, absolute offsets
    const char* file;     // for messages
    const char* section;

    size_t left() const { return end - pos; }
    const uint8_t* take(size_t n) {
        if (n > left())
            fail("%s: %s is truncated at offset %zu (needs %zu bytes, %zu left)", file, section, pos, n, left());
        const uint8_t* p = data + pos;
        pos += n;
        return p;
    }
    template <class T> T get() {
        T v;
        memcpy(&v, take(sizeof v), sizeof v);
        return v;
    }
    uint8_t u8() { return get<uint8_t>(); }
    uint32_t u32() { return get<uint32_t>(); }
    int32_t i32() { return get<int32_t>(); }
    uint64_t u64() { return get<uint64_t>(); }
    float f32() { return get<float>(); }
    double f64() { return get<double>(); }
    std::string bytes(size_t n) {
        const uint8_t* p = take(n);
        return std::string(reinterpret_cast<const char*>(p), n);
    }
    void expect_end() {
        if (left() != 0) fail("%s: %s has %zu unexpected bytes at its end", file, section, left());
    }
};

// A section [offset, offset + size) must lie after the header and inside the file (no overflow: the
// subtraction happens only once offset <= file_size is known).
inline Reader section_reader(const uint8_t* data, size_t file_size, const char* file, const char* section,
                             uint64_t offset, uint64_t size) {
    if (offset < HEADER_SIZE)
        fail("%s: %s offset %llu is inside the header", file, section, (unsigned long long)offset);
    if (offset > file_size || size > file_size - offset)
        fail("%s: %s (offset %llu, size %llu) lies outside the file (%zu bytes)", file, section,
             (unsigned long long)offset, (unsigned long long)size, file_size);
    return Reader{data, size_t(offset), size_t(offset + size), file, section};
}

// ----------------------------------------------------------------------------
// Header: 256 bytes of fixed fields
// ----------------------------------------------------------------------------

struct Header {
    uint32_t version = 0;
    uint32_t flags = 0;
    uint64_t strings_offset = 0, strings_size = 0;
    uint64_t tokenizer_offset = 0, tokenizer_size = 0;
    uint64_t tensors_offset = 0, n_tensors = 0;
};

inline void check_range(const char* file, const char* field, uint32_t v, uint32_t lo, uint32_t hi) {
    if (v < lo || v > hi) fail("%s: %s = %u is outside [%u, %u]", file, field, v, lo, hi);
}

// Model dims, each bounded so that every size computed from them fits comfortably in 64 bits.
inline void check_config(const char* file, const Config& c) {
    if (c.arch != ARCH_QWEN2 && c.arch != ARCH_QWEN3)
        fail("%s: arch = %d is unknown (2 = Qwen2ForCausalLM, 3 = Qwen3ForCausalLM)", file, c.arch);
    check_range(file, "dim", c.dim, 1, 65536);
    check_range(file, "ffn_dim", c.ffn_dim, 1, 1 << 20);
    check_range(file, "n_layers", c.n_layers, 1, 512);
    check_range(file, "n_heads", c.n_heads, 1, 1024);
    check_range(file, "n_kv_heads", c.n_kv_heads, 1, c.n_heads);
    check_range(file, "head_dim", c.head_dim, 2, 1024);
    check_range(file, "vocab_size", c.vocab_size, 1, 1 << 22);
    check_range(file, "max_seq_len", c.max_seq_len, 1, 1 << 24);
    if (c.n_heads % c.n_kv_heads != 0)
        fail("%s: n_heads = %d is not a multiple of n_kv_heads = %d", file, c.n_heads, c.n_kv_heads);
    if (c.head_dim % 2 != 0) fail("%s: head_dim = %d must be even (RoPE rotates pairs)", file, c.head_dim);
    if (!(c.norm_eps > 0 && c.norm_eps < 1)) fail("%s: norm_eps = %g is outside (0, 1)", file, c.norm_eps);
    if (!(c.rope_theta > 0 && std::isfinite(c.rope_theta)))
        fail("%s: rope_theta = %g must be positive and finite", file, c.rope_theta);
}

// NaN means "not given"; otherwise each value must be one a sampler accepts.
inline void check_sampling(const char* file, const ChatInfo& c) {
    if (!std::isnan(c.temperature) && !(c.temperature >= 0 && std::isfinite(c.temperature)))
        fail("%s: default temperature = %g must be >= 0", file, c.temperature);
    if (!std::isnan(c.top_p) && !(c.top_p > 0 && c.top_p <= 1))
        fail("%s: default top_p = %g is outside (0, 1]", file, c.top_p);
    if (c.top_k < -1) fail("%s: default top_k = %d must be >= 0 (or -1 = not given)", file, c.top_k);
    if (!std::isnan(c.repetition_penalty) && !(c.repetition_penalty > 0 && std::isfinite(c.repetition_penalty)))
        fail("%s: default repetition_penalty = %g must be > 0", file, c.repetition_penalty);
}

// Reads the fields in file order; the comments are their byte offsets.
inline Header read_header(const uint8_t* data, size_t size, const char* file, Config& c, ChatInfo& chat) {
    if (size < HEADER_SIZE) fail("%s: %zu bytes is too short for a weights.bin header (256 bytes)", file, size);
    Reader r{data, 0, HEADER_SIZE, file, "header"};
    if (memcmp(r.take(8), FILE_MAGIC, 8) != 0)                            // 0
        fail("%s: not a weights.bin file (bad magic; export one with tools/export.py)", file);
    uint32_t version = r.u32();                                          // 8
    if (version > FILE_VERSION)
        fail("%s: written by a newer exporter (version %u), this build reads versions 1 and %u", file, version,
             FILE_VERSION);
    if (version < 1) fail("%s: unknown format version %u", file, version);
    Header h;
    h.version = version;
    h.flags = r.u32();                                                   // 12
    if (h.flags & ~uint32_t(FLAG_ALL)) fail("%s: unknown header flags 0x%x", file, h.flags & ~uint32_t(FLAG_ALL));
    // 16..48: arch and dims. Values past 2^30 would not fit an int; check_config bounds them properly.
    int* dims[] = {&c.arch, &c.dim, &c.ffn_dim, &c.n_layers, &c.n_heads, &c.n_kv_heads, &c.head_dim,
                   &c.vocab_size, &c.max_seq_len};
    const char* names[] = {"arch", "dim", "ffn_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                           "vocab_size", "max_seq_len"};
    for (int i = 0; i < 9; i++) {
        uint32_t v = r.u32();
        if (v > (1u << 30)) fail("%s: %s = %u is implausible", file, names[i], v);
        *dims[i] = int(v);
    }
    c.norm_eps = r.f32();                                                // 52
    c.rope_theta = r.f64();                                              // 56
    chat.temperature = r.f32();                                          // 64
    chat.top_p = r.f32();                                                // 68
    chat.top_k = r.i32();                                                // 72
    chat.repetition_penalty = r.f32();                                   // 76
    uint32_t n_stop = r.u32();                                           // 80
    check_range(file, "n_stop_ids", n_stop, 1, MAX_STOP_IDS);
    for (int i = 0; i < MAX_STOP_IDS; i++) {                             // 84
        uint32_t id = r.u32();
        if (i < int(n_stop)) {
            if (id > (1u << 22)) fail("%s: stop id %u is out of range", file, id);
            chat.stop_ids.push_back(int(id));
        } else if (id != 0) {
            fail("%s: unused stop id slot %d is %u, must be 0", file, i, id);
        }
    }
    if (r.u32() != 0) fail("%s: reserved header field at offset 116 is not 0", file);  // 116
    h.strings_offset = r.u64(), h.strings_size = r.u64();                // 120, 128
    h.tokenizer_offset = r.u64(), h.tokenizer_size = r.u64();            // 136, 144
    h.tensors_offset = r.u64(), h.n_tensors = r.u64();                   // 152, 160
    for (const uint8_t* p = r.take(r.left()); p < data + HEADER_SIZE; p++)  // 168..255
        if (*p != 0) fail("%s: header padding at offset %zu is not 0", file, size_t(p - data));

    c.tied = h.flags & FLAG_TIED;
    c.qkv_bias = h.flags & FLAG_QKV_BIAS;
    c.qk_norm = h.flags & FLAG_QK_NORM;
    chat.has_default_system = h.flags & FLAG_DEFAULT_SYSTEM;
    chat.thinking = h.flags & FLAG_THINKING;
    chat.tools = h.flags & FLAG_TOOLS;
    if (h.flags & FLAG_HAS_WEIGHTS) {
        check_config(file, c);
    } else if (c.arch || c.dim || c.ffn_dim || c.n_layers || c.n_heads || c.n_kv_heads || c.head_dim ||
               c.vocab_size || c.max_seq_len || c.norm_eps != 0 || c.rope_theta != 0 ||
               (h.flags & (FLAG_TIED | FLAG_QKV_BIAS | FLAG_QK_NORM)) || h.n_tensors != 0) {
        fail("%s: a file without weights (flag has_weights = 0) must have zero model dims, flags and tensors",
             file);
    }
    check_sampling(file, chat);
    return h;
}

// ----------------------------------------------------------------------------
// Strings and tokenizer sections
// ----------------------------------------------------------------------------

inline void read_strings(Reader r, ChatInfo& chat) {
    uint32_t count = r.u32();
    if (count != 2) fail("%s: strings section has %u strings, expected 2", r.file, count);
    chat.model_name = r.bytes(r.u32());
    chat.default_system = r.bytes(r.u32());
    r.expect_end();
    if (chat.has_default_system != !chat.default_system.empty())
        fail("%s: flag has_default_system = %d but the default system prompt is %zu bytes", r.file,
             int(chat.has_default_system), chat.default_system.size());
}

// What byte-level BPE needs of a vocabulary: each of the 256 byte values is a regular token (any text can be
// spelled), merges refer to regular tokens, and the merged bytes are themselves a regular token (the BPE step
// "replace the pair by its merge" needs that token's id). A file that passes makes a Tokenizer.
inline void check_merges(const char* file, const Vocab& v) {
    std::unordered_map<std::string_view, int> id_of;  // regular token bytes -> id
    id_of.reserve(v.tokens.size());
    for (size_t i = 0; i < v.tokens.size(); i++) {
        if (v.kind[i] != TOKEN_REGULAR) continue;
        if (!id_of.emplace(v.tokens[i], int(i)).second)
            fail("%s: tokens %d and %zu have the same bytes", file, id_of[v.tokens[i]], i);
    }
    char byte[1];
    for (int b = 0; b < 256; b++) {
        byte[0] = char(b);
        if (!id_of.count(std::string_view(byte, 1)))
            fail("%s: no token for the byte 0x%02X (a byte-level vocabulary has all 256)", file, b);
    }
    std::string merged;
    for (size_t rank = 0; rank < v.merges.size(); rank++) {
        auto [left, right] = v.merges[rank];
        if (v.kind[left] != TOKEN_REGULAR || v.kind[right] != TOKEN_REGULAR)
            fail("%s: merge %zu (%d, %d) refers to an added token", file, rank, left, right);
        merged.assign(v.tokens[left]).append(v.tokens[right]);
        if (!id_of.count(merged))
            fail("%s: merge %zu (%d, %d) makes bytes that are not a token", file, rank, left, right);
    }
}

inline void read_vocab(Reader r, Vocab& v) {
    uint32_t n_tokens = r.u32(), n_merges = r.u32();
    check_range(r.file, "n_tokens", n_tokens, 1, 1u << 22);
    if (n_tokens > r.left() / 5)  // each token record is at least 5 bytes: check before allocating
        fail("%s: n_tokens = %u cannot fit in the tokenizer section (%zu bytes)", r.file, n_tokens, r.left());
    v.tokens.reserve(n_tokens);
    v.kind.reserve(n_tokens);
    for (uint32_t i = 0; i < n_tokens; i++) {
        uint32_t len = r.u32();
        uint8_t kind = r.u8();
        if (kind > TOKEN_ADDED) fail("%s: token %u has unknown kind %u", r.file, i, kind);
        if (len == 0) fail("%s: token %u is empty", r.file, i);
        v.tokens.push_back(r.bytes(len));
        v.kind.push_back(kind);
    }
    if (n_merges != r.left() / 8 || r.left() % 8 != 0)
        fail("%s: n_merges = %u but %zu bytes remain in the tokenizer section (8 per merge)", r.file, n_merges,
             r.left());
    v.merges.reserve(n_merges);
    for (uint32_t i = 0; i < n_merges; i++) {
        uint32_t left = r.u32(), right = r.u32();
        if (left >= n_tokens || right >= n_tokens)
            fail("%s: merge %u refers to token %u, but there are %u tokens", r.file, i,
                 left >= n_tokens ? left : right, n_tokens);
        v.merges.emplace_back(int(left), int(right));
    }
    check_merges(r.file, v);
}

// ----------------------------------------------------------------------------
// Tensor table: each tensor's name, shape and place, checked against the config
// ----------------------------------------------------------------------------

// One weights.bin tensor: the entries [first, first + count) of tensor_table that share its name, stacked.
struct BinTensor {
    const char* name;
    size_t first, count;
    bool matrix;         // matrices (dtype bf16 or Q8_0), else vectors (bf16)
    int ndim;
    uint64_t shape[3];   // (ndim) dims, layers first; unused ones are 0
    uint64_t per_layer;  // rows (matrix) or values (vector) of one layer's slice: the entries' rows / cols summed
};

inline std::vector<BinTensor> bin_tensors(const Config& c, const std::vector<TensorSpec>& specs) {
    std::vector<BinTensor> out;
    for (size_t i = 0, j; i < specs.size(); i = j) {
        const TensorSpec& s = specs[i];
        BinTensor t{s.name, i, 0, s.kind == TensorSpec::MATRIX, 0, {0, 0, 0}, 0};
        for (j = i; j < specs.size() && strcmp(specs[j].name, s.name) == 0; j++)
            t.per_layer += uint64_t(t.matrix ? specs[j].rows : specs[j].cols);
        t.count = j - i;
        uint64_t dims[3] = {uint64_t(c.n_layers), t.per_layer, uint64_t(s.cols)};
        int first_dim = s.per_layer ? 0 : 1, last_dim = t.matrix ? 3 : 2;
        for (int k = first_dim; k < last_dim; k++) t.shape[t.ndim++] = dims[k];
        out.push_back(t);
    }
    return out;
}

// The name of table entry i: NUL-padded, one of the expected tensors, not seen before (found[k]: tensor k seen).
inline const BinTensor& read_tensor_name(Reader& r, size_t i, const std::vector<BinTensor>& tensors,
                                         std::vector<bool>& found) {
    const char* raw = reinterpret_cast<const char*>(r.take(TENSOR_NAME_SIZE));
    size_t len = strnlen(raw, TENSOR_NAME_SIZE);
    if (len == TENSOR_NAME_SIZE) fail("%s: tensor entry %zu has no NUL-terminated name", r.file, i);
    for (size_t k = len; k < TENSOR_NAME_SIZE; k++)
        if (raw[k]) fail("%s: tensor entry %zu has bytes after its name's NUL", r.file, i);
    std::string name(raw, len);
    for (size_t k = 0; k < tensors.size(); k++) {
        if (name != tensors[k].name) continue;
        if (found[k]) fail("%s: tensor '%s' appears twice", r.file, tensors[k].name);
        found[k] = true;
        return tensors[k];
    }
    fail("%s: unexpected tensor '%s' (not in the format, or not for these flags)", r.file, name.c_str());
}

inline std::string shape_str(int ndim, const uint64_t* shape) {
    std::string s = "(";
    for (int i = 0; i < ndim; i++) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ")";
}

struct ByteRange {  // a part of the file something occupies, for the overlap check
    uint64_t begin, end;
    std::string what;
};

// The storage type of a weights.bin tensor: bf16, or from version 2 on Q8_0 for a matrix whose rows are
// whole blocks of 32.
inline DType bin_dtype(const char* file, const Header& h, const BinTensor& t, uint32_t dtype) {
    if (dtype == DTYPE_BF16) return DT_BF16;
    if (dtype != DTYPE_Q8_0 || h.version < 2)
        fail("%s: tensor '%s' has dtype %u, expected 0 (bf16)%s", file, t.name, dtype,
             h.version < 2 ? " in a version-1 file" : " or 1 (Q8_0)");
    if (!t.matrix) fail("%s: tensor '%s' has dtype 1 (Q8_0), which only matrices may have", file, t.name);
    if (t.shape[t.ndim - 1] % 32 != 0)
        fail("%s: tensor '%s' is Q8_0 but its rows of %llu are not whole blocks of 32", file, t.name,
             (unsigned long long)t.shape[t.ndim - 1]);
    return DT_Q8_0;
}

// Points the views of tensor t (at `data`, type `type`) into the mapping: layer l's slice of a stacked tensor
// starts l * (its slice's bytes) in, and within it the entries follow one another. Vectors are widened from
// bf16 into m.widened (sized beforehand, so that the pointers into it stay valid).
inline void bind_bin_tensor(Model& m, const std::vector<TensorSpec>& specs, const BinTensor& t, const uint8_t* data,
                            DType type, size_t& widened_at) {
    const Config& c = m.config;
    const int layers = specs[t.first].per_layer ? c.n_layers : 1;
    for (int l = 0; l < layers; l++) {
        uint64_t at = 0;  // rows or values into this layer's slice
        for (size_t k = t.first; k < t.first + t.count; k++) {
            const TensorSpec& s = specs[k];
            Tensor& v = s.in(m.weights, s.per_layer ? l : -1);
            v.rows = s.rows, v.cols = s.cols;
            if (t.matrix) {
                v.type = type;
                v.data = data + (uint64_t(l) * t.per_layer + at) * row_bytes(type, uint64_t(s.cols));
                at += uint64_t(s.rows);
            } else {
                const uint8_t* src = data + (uint64_t(l) * t.per_layer + at) * sizeof(bf16);
                float* dst = &m.widened[widened_at];
                for (int i = 0; i < s.cols; i++) dst[i] = bf16_to_f32(rd16(src + 2 * size_t(i)));
                v.type = DT_F32;
                v.data = reinterpret_cast<const uint8_t*>(dst);
                widened_at += size_t(s.cols);
                at += uint64_t(s.cols);
            }
        }
    }
}

// Reads the table, points the weights into the mapping, and returns the byte ranges the tensors occupy.
inline std::vector<ByteRange> read_tensors(const uint8_t* data, size_t size, const char* file, const Header& h,
                                           Model& m) {
    const Config& c = m.config;
    const std::vector<TensorSpec> specs = tensor_table(c);
    const std::vector<BinTensor> tensors = bin_tensors(c, specs);
    std::vector<bool> found(tensors.size());
    if (h.n_tensors != tensors.size())
        fail("%s: n_tensors = %llu, the config and flags imply %zu", file, (unsigned long long)h.n_tensors,
             tensors.size());
    size_t n_widened = 0;
    for (const TensorSpec& s : specs)
        if (s.kind != TensorSpec::MATRIX) n_widened += size_t(s.cols) * size_t(s.per_layer ? c.n_layers : 1);
    m.widened.assign(n_widened, 0.0f);
    m.weights.layers.assign(size_t(c.n_layers), Layer());
    size_t widened_at = 0;
    uint64_t table_size = tensors.size() * TENSOR_ENTRY_SIZE;
    Reader r = section_reader(data, size, file, "tensor table", h.tensors_offset, table_size);
    std::vector<ByteRange> ranges = {{h.tensors_offset, h.tensors_offset + table_size, "the tensor table"}};
    for (size_t i = 0; i < tensors.size(); i++) {
        const BinTensor& t = read_tensor_name(r, i, tensors, found);
        const char* name = t.name;
        uint32_t dtype = r.u32(), ndim = r.u32();
        uint64_t shape[3] = {r.u32(), r.u32(), r.u32()};
        uint64_t offset = r.u64();
        uint32_t reserved = r.u32();
        if (ndim < 1 || ndim > 3) fail("%s: tensor '%s' has ndim %u, expected 1..3", file, name, ndim);
        bool same = int(ndim) == t.ndim;
        for (int k = 0; k < 3; k++) same = same && shape[k] == t.shape[k];  // unused dims are 0 in both
        if (!same)
            fail("%s: tensor '%s' has shape %s, config implies %s", file, name, shape_str(ndim, shape).c_str(),
                 shape_str(t.ndim, t.shape).c_str());
        DType type = bin_dtype(file, h, t, dtype);
        if (reserved != 0) fail("%s: tensor '%s' has a nonzero reserved field", file, name);
        uint64_t rows = 1;  // every dim but the last
        for (int k = 0; k + 1 < t.ndim; k++) rows *= t.shape[k];
        uint64_t bytes = rows * row_bytes(type, t.shape[t.ndim - 1]);  // the config bounds keep this below 2^51
        if (offset % TENSOR_ALIGN != 0)
            fail("%s: tensor '%s' offset %llu is not a multiple of %llu", file, name,
                 (unsigned long long)offset, (unsigned long long)TENSOR_ALIGN);
        if (offset > size || bytes > size - offset)
            fail("%s: tensor '%s' (%llu bytes at offset %llu) lies outside the file (%zu bytes)", file,
                 name, (unsigned long long)bytes, (unsigned long long)offset, size);
        bind_bin_tensor(m, specs, t, data + offset, type, widened_at);
        ranges.push_back({offset, offset + bytes, "tensor '" + std::string(name) + "'"});
    }
    if (c.tied) m.weights.lm_head = m.weights.token_embd;
    return ranges;
}

// No two sections or tensors may share bytes (a tensor over the tokenizer would be garbage weights).
inline void check_no_overlap(const char* file, std::vector<ByteRange> ranges) {
    std::sort(ranges.begin(), ranges.end(), [](const ByteRange& a, const ByteRange& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    for (size_t i = 1; i < ranges.size(); i++)
        if (ranges[i].begin < ranges[i - 1].end && ranges[i].begin != ranges[i].end)
            fail("%s: %s overlaps %s", file, ranges[i].what.c_str(), ranges[i - 1].what.c_str());
}

// ----------------------------------------------------------------------------
// weights.bin: a whole file, validated, into a Model
// ----------------------------------------------------------------------------

// Validates a whole weights.bin image and fills a Model whose weights point into `data` (the caller keeps it
// alive). `file` names the file in messages.
inline Model parse_weights_bin(const uint8_t* data, size_t size, const std::string& file, bool need_weights) {
    const char* name = file.c_str();
    Model m;
    Header h = read_header(data, size, name, m.config, m.chat);
    m.has_weights = h.flags & FLAG_HAS_WEIGHTS;
    if (need_weights && !m.has_weights)
        fail("%s: this file has only a tokenizer (exported with --tokenizer-only); a model needs the weights",
             name);
    read_strings(section_reader(data, size, name, "strings section", h.strings_offset, h.strings_size), m.chat);
    read_vocab(section_reader(data, size, name, "tokenizer section", h.tokenizer_offset, h.tokenizer_size),
               m.vocab);
    int n_tokens = int(m.vocab.tokens.size());
    if (m.has_weights && n_tokens > m.config.vocab_size)
        fail("%s: tokenizer has %d tokens but vocab_size (embedding rows) is %d", name, n_tokens,
             m.config.vocab_size);
    for (int id : m.chat.stop_ids)
        if (id >= n_tokens) fail("%s: stop id %d is not a token (%d tokens)", name, id, n_tokens);

    std::vector<ByteRange> ranges = {{0, HEADER_SIZE, "the header"},
                                     {h.strings_offset, h.strings_offset + h.strings_size, "the strings section"},
                                     {h.tokenizer_offset, h.tokenizer_offset + h.tokenizer_size,
                                      "the tokenizer section"}};
    if (m.has_weights) {
        std::vector<ByteRange> t = read_tensors(data, size, name, h, m);
        ranges.insert(ranges.end(), t.begin(), t.end());
    } else {
        section_reader(data, size, name, "tensor table", h.tensors_offset, 0);  // empty, but inside the file
        ranges.push_back({h.tensors_offset, h.tensors_offset, "the tensor table"});
    }
    check_no_overlap(name, ranges);
    // The file ends with its last part: the last tensor's data (the empty tensor table without weights).
    const ByteRange* last = &ranges[0];
    for (const ByteRange& r : ranges) last = r.end > last->end ? &r : last;
    if (size != last->end)
        fail("%s: %llu unexpected bytes after %s, which must end the file", name,
             (unsigned long long)(size - last->end), last->what.c_str());
    return m;
}

// ============================================================================
// GGUF: llama.cpp's model files (qwen2 and qwen3 architectures), validated and used in place
// ============================================================================
// A GGUF file, versions 2 and 3 (llama.cpp's docs/gguf.md; what this reader takes from it: docs/format.md):
//   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x (string key, u32 value type, value)       metadata: dims, tokenizer, chat template, ...
//   n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)   ne[0]: the row length
//   padding to general.alignment (default 32); the tensor data, each tensor at data start + its offset
// A string is (u64 length, bytes), an array (u32 element type, u64 count, elements). Keys and tensors are looked
// up by name, never by position. GGUF's own security bugs came from trusting these numbers, so each is checked
// before use: every count and length against the bytes left, element sizes times counts without overflow,
// every dimension and their product bounded, offsets aligned and inside the file, no tensor or key twice, no
// two tensors sharing bytes, every tensor one the model uses, with the shape and a type its weight may have.
// Big models come split in parts (NAME-00001-of-00003.gguf, llama.cpp's gguf-split): naming the first part
// loads them all; the metadata is the first part's, the tensors are found in whichever part holds them.

constexpr char GGUF_MAGIC[4] = {'G', 'G', 'U', 'F'};

inline int utf8_decode(const uint8_t* s, size_t n, uint32_t* cp);  // the tokenizer's UTF-8 helpers (below)
inline bool utf8_valid(const std::string& s);
inline std::string utf8_sanitize(const std::string& s);

// GGUF's metadata value types.
enum GgufType : uint32_t {
    GG_U8 = 0, GG_I8 = 1, GG_U16 = 2, GG_I16 = 3, GG_U32 = 4, GG_I32 = 5, GG_F32 = 6, GG_BOOL = 7,
    GG_STRING = 8, GG_ARRAY = 9, GG_U64 = 10, GG_I64 = 11, GG_F64 = 12,
};

// Bytes of a scalar of type t; 0 for strings and arrays; -1 for an unknown type.
inline int gguf_scalar_size(uint32_t t) {
    static const int size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t <= GG_F64 ? size[t] : -1;
}

// llama.cpp's token types (tokenizer.ggml.token_type).
enum GgufTokenType : int32_t { GT_NORMAL = 1, GT_UNKNOWN = 2, GT_CONTROL = 3, GT_USER_DEFINED = 4, GT_UNUSED = 5,
                               GT_BYTE = 6 };

struct GgufValue {          // where one metadata value lies in its file
    uint32_t type = 0;      // GgufType
    uint32_t elem = 0;      // arrays: the element type
    uint64_t count = 0;     // arrays: the number of elements
    size_t pos = 0;         // offset of the value (of an array: of its first element)
};

struct GgufTensor {         // one tensor info, checked
    std::string name;
    DType type;
    int n_dims;
    uint64_t ne[4];         // (n_dims) ggml order: ne[0] is the row length
    uint64_t offset;        // absolute offset of its data in its file
    uint64_t bytes;
    const uint8_t* data;    // its data in the mapping
    bool used = false;      // claimed by a weight of the model
};

struct GgufFile {           // one parsed file (or part)
    const uint8_t* data = nullptr;  // (size) the mapping
    size_t size = 0;
    std::string name;
    uint32_t version = 0;
    std::unordered_map<std::string, GgufValue> kv;
    std::vector<GgufTensor> tensors;
};

inline bool is_gguf(const uint8_t* data, size_t size) { return size >= 4 && memcmp(data, GGUF_MAGIC, 4) == 0; }

// A string: u64 length, then that many bytes (at most `max`).
inline std::string gguf_string(Reader& r, uint64_t max, const char* what) {
    uint64_t n = r.u64();
    if (n > max) fail("%s: %s of %llu bytes at offset %zu is longer than %llu", r.file, what, (unsigned long long)n,
                      r.pos - 8, (unsigned long long)max);
    return r.bytes(size_t(n));
}

inline GgufValue gguf_value(Reader& r, uint32_t type, int depth);

// An array: element type, count, then count elements; the count is checked against the bytes left before any
// element is read (each element takes at least one byte, a string at least 8).
inline GgufValue gguf_array(Reader& r, int depth) {
    GgufValue v;
    v.type = GG_ARRAY;
    v.elem = r.u32();
    v.count = r.u64();
    v.pos = r.pos;
    int size = gguf_scalar_size(v.elem);
    if (size < 0) fail("%s: array of unknown type %u at offset %zu", r.file, v.elem, r.pos - 12);
    if (v.elem == GG_ARRAY && depth >= 2) fail("%s: arrays nested too deeply at offset %zu", r.file, r.pos - 12);
    uint64_t min_size = size > 0 ? uint64_t(size) : v.elem == GG_STRING ? 8 : 12;
    if (v.count > r.left() / min_size)
        fail("%s: array of %llu elements at offset %zu does not fit in the file", r.file, (unsigned long long)v.count,
             r.pos - 12);
    if (size > 0) {
        r.take(size_t(v.count) * size_t(size));
    } else {
        for (uint64_t i = 0; i < v.count; i++) gguf_value(r, v.elem, depth + 1);
    }
    return v;
}

// Reads past one value of the given type and says where it lies.
inline GgufValue gguf_value(Reader& r, uint32_t type, int depth) {
    if (type == GG_ARRAY) return gguf_array(r, depth);
    GgufValue v;
    v.type = type;
    v.pos = r.pos;
    int size = gguf_scalar_size(type);
    if (size < 0) fail("%s: unknown metadata value type %u at offset %zu", r.file, type, r.pos);
    if (type == GG_STRING) {
        uint64_t n = r.u64();
        if (n > r.left()) fail("%s: a string of %llu bytes at offset %zu runs past the end of the file", r.file,
                               (unsigned long long)n, r.pos - 8);
        r.take(size_t(n));
    } else {
        r.take(size_t(size));
    }
    return v;
}

constexpr uint64_t GGUF_MAX_ELEMENTS = uint64_t(1) << 40;  // per tensor: far above any model, far below overflow

// One tensor info: name, dims, type, offset. Shapes and types are checked here; the place in the file once
// the data start is known.
inline GgufTensor gguf_tensor_info(Reader& r) {
    GgufTensor t;
    t.name = gguf_string(r, 64, "a tensor name");
    const char* name = t.name.c_str();
    uint32_t n_dims = r.u32();
    if (n_dims < 1 || n_dims > 4) fail("%s: tensor '%s' has %u dimensions, expected 1..4", r.file, name, n_dims);
    t.n_dims = int(n_dims);
    uint64_t count = 1;
    for (int k = 0; k < 4; k++) t.ne[k] = 1;
    for (int k = 0; k < t.n_dims; k++) {
        t.ne[k] = r.u64();
        if (t.ne[k] < 1 || t.ne[k] > GGUF_MAX_ELEMENTS || count > GGUF_MAX_ELEMENTS / t.ne[k])
            fail("%s: tensor '%s' has an implausible dimension %d = %llu", r.file, name, k,
                 (unsigned long long)t.ne[k]);
        count *= t.ne[k];
    }
    uint32_t type = r.u32();
    const DTypeInfo ti = dtype_info(type);
    if (!ti.name)
        fail("%s: tensor '%s' is %s, a type this build does not read (it reads F32, F16, BF16, Q8_0, Q4_0, Q5_0, "
             "Q5_1, Q4_K, Q5_K, Q6_K)", r.file, name, dtype_name(type).c_str());
    t.type = DType(type);
    if (t.ne[0] % uint64_t(ti.block) != 0)
        fail("%s: tensor '%s' is %s but its rows of %llu values are not whole blocks of %d", r.file, name, ti.name,
             (unsigned long long)t.ne[0], ti.block);
    t.bytes = count / t.ne[0] * row_bytes(t.type, t.ne[0]);
    t.offset = r.u64();  // relative to the data start for now
    return t;
}

// Parses one file: header, metadata, tensor infos, and places every tensor inside the data section.
inline GgufFile parse_gguf_file(const uint8_t* data, size_t size, const std::string& file) {
    GgufFile f;
    f.data = data, f.size = size, f.name = file;
    const char* name = f.name.c_str();
    if (size < 24) fail("%s: %zu bytes is too short for a GGUF header (24 bytes)", name, size);
    Reader r{data, 0, size, name, "the GGUF header"};
    r.take(4);
    f.version = r.u32();
    if (f.version < 2 || f.version > 3)
        fail("%s: GGUF version %u is not supported (versions 2 and 3 are)", name, f.version);
    uint64_t n_tensors = r.u64(), n_kv = r.u64();
    r.section = "the GGUF metadata";
    if (n_kv > r.left() / 13)  // a key-value pair takes at least 13 bytes (u64 length, 1 byte, u32 type)
        fail("%s: %llu metadata entries cannot fit in the file", name, (unsigned long long)n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        std::string key = gguf_string(r, 65535, "a metadata key");
        if (key.empty()) fail("%s: metadata entry %llu has an empty key", name, (unsigned long long)i);
        uint32_t type = r.u32();
        GgufValue v = gguf_value(r, type, 0);
        if (!f.kv.emplace(key, v).second) fail("%s: metadata key '%s' appears twice", name, key.c_str());
    }
    uint64_t alignment = 32;
    if (f.kv.count("general.alignment")) {
        const GgufValue& v = f.kv["general.alignment"];
        Reader a{data, v.pos, size, name, "general.alignment"};
        alignment = v.type == GG_U32 ? a.u32() : 0;
        if (alignment < 8 || alignment > (1u << 20) || alignment % 8 != 0)
            fail("%s: general.alignment must be a u32 multiple of 8 up to 2^20", name);
    }
    r.section = "the GGUF tensor infos";
    if (n_tensors > r.left() / 33)  // a tensor info takes at least 33 bytes
        fail("%s: %llu tensors cannot fit in the file", name, (unsigned long long)n_tensors);
    f.tensors.reserve(size_t(n_tensors));
    std::unordered_map<std::string, size_t> seen;
    for (uint64_t i = 0; i < n_tensors; i++) {
        f.tensors.push_back(gguf_tensor_info(r));
        if (!seen.emplace(f.tensors.back().name, size_t(i)).second)
            fail("%s: tensor '%s' appears twice", name, f.tensors.back().name.c_str());
    }
    uint64_t data_start = (uint64_t(r.pos) + alignment - 1) / alignment * alignment;
    if (n_tensors > 0 && data_start > size) fail("%s: the tensor data would start past the end of the file", name);
    std::vector<ByteRange> ranges;
    for (GgufTensor& t : f.tensors) {
        if (t.offset % alignment != 0)
            fail("%s: tensor '%s' offset %llu is not a multiple of the alignment %llu", name, t.name.c_str(),
                 (unsigned long long)t.offset, (unsigned long long)alignment);
        if (t.offset > size - data_start || t.bytes > size - data_start - t.offset)
            fail("%s: tensor '%s' (%llu bytes at data offset %llu) lies outside the file (%zu bytes)", name,
                 t.name.c_str(), (unsigned long long)t.bytes, (unsigned long long)t.offset, size);
        t.offset += data_start;
        t.data = data + t.offset;
        ranges.push_back({t.offset, t.offset + t.bytes, "tensor '" + t.name + "'"});
    }
    check_no_overlap(name, ranges);
    return f;
}

// ----------------------------------------------------------------------------
// GGUF metadata: typed lookups with one-line errors
// ----------------------------------------------------------------------------

struct GgufMeta {
    const GgufFile& f;

    const GgufValue* find(const std::string& key) const {
        auto it = f.kv.find(key);
        return it == f.kv.end() ? nullptr : &it->second;
    }
    Reader at(const GgufValue& v) const { return Reader{f.data, v.pos, f.size, f.name.c_str(), "the GGUF metadata"}; }
    [[noreturn]] void wrong(const std::string& key, const char* want) const {
        fail("%s: metadata '%s' must be %s", f.name.c_str(), key.c_str(), want);
    }
    [[noreturn]] void missing(const std::string& key) const {
        fail("%s: metadata '%s' is missing", f.name.c_str(), key.c_str());
    }
    // A scalar of type t read as a double (integers exactly up to 2^53, which is all this reader needs).
    static double scalar(Reader& r, uint32_t t) {
        switch (t) {
            case GG_U8: return r.u8();
            case GG_I8: return int8_t(r.u8());
            case GG_U16: return r.get<uint16_t>();
            case GG_I16: return r.get<int16_t>();
            case GG_U32: return r.u32();
            case GG_I32: return r.i32();
            case GG_F32: return r.f32();
            case GG_BOOL: return r.u8();
            case GG_U64: return double(r.u64());
            case GG_I64: return double(r.get<int64_t>());
            case GG_F64: return r.f64();
            default: return NAN;
        }
    }
    static bool is_int(uint32_t t) { return t <= GG_I32 || t == GG_U64 || t == GG_I64; }
    // An integer key (of any integer type) in [lo, hi], or `dflt` when absent and not required.
    int64_t integer(const std::string& key, int64_t lo, int64_t hi, bool required, int64_t dflt = 0) const {
        const GgufValue* v = find(key);
        if (!v) {
            if (required) missing(key);
            return dflt;
        }
        if (!is_int(v->type)) wrong(key, "an integer");
        Reader r = at(*v);
        double x = scalar(r, v->type);
        if (!(x >= double(lo) && x <= double(hi)))
            fail("%s: metadata '%s' = %.0f is outside [%lld, %lld]", f.name.c_str(), key.c_str(), x, (long long)lo,
                 (long long)hi);
        return int64_t(x);
    }
    // A number key (float or integer), or NAN when absent and not required.
    double number(const std::string& key, bool required) const {
        const GgufValue* v = find(key);
        if (!v) {
            if (required) missing(key);
            return NAN;
        }
        if (!is_int(v->type) && v->type != GG_F32 && v->type != GG_F64) wrong(key, "a number");
        Reader r = at(*v);
        return scalar(r, v->type);
    }
    bool has_string(const std::string& key) const {
        const GgufValue* v = find(key);
        return v && v->type == GG_STRING;
    }
    std::string string(const std::string& key, bool required, const std::string& dflt = "") const {
        const GgufValue* v = find(key);
        if (!v) {
            if (required) missing(key);
            return dflt;
        }
        if (v->type != GG_STRING) wrong(key, "a string");
        Reader r = at(*v);
        return r.bytes(size_t(r.u64()));
    }
    // An array key's element reader: count elements of type `elem`, the reader at the first one.
    Reader array(const std::string& key, uint32_t elem, uint64_t& count) const {
        const GgufValue* v = find(key);
        if (!v) missing(key);
        if (v->type != GG_ARRAY || v->elem != elem)
            wrong(key, elem == GG_STRING ? "an array of strings" : "an array of integers");
        count = v->count;
        return at(*v);
    }
};

// ----------------------------------------------------------------------------
// GGUF metadata -> Config, Vocab and ChatInfo
// ----------------------------------------------------------------------------

// Qwen2/Qwen3 dims from the {arch}.* keys (head_dim: attention.key_length when present, as Qwen3 files have).
inline void gguf_config(const GgufMeta& g, Config& c) {
    const char* file = g.f.name.c_str();
    std::string arch = g.string("general.architecture", true);
    if (arch == "qwen2") c.arch = ARCH_QWEN2;
    else if (arch == "qwen3") c.arch = ARCH_QWEN3;
    else fail("%s: architecture '%s' is not supported (supported: qwen2, qwen3)", file, utf8_sanitize(arch).c_str());
    const std::string a = arch + ".";
    const int64_t big = 1 << 30;  // check_config bounds each properly
    c.n_layers = int(g.integer(a + "block_count", 1, big, true));
    c.dim = int(g.integer(a + "embedding_length", 1, big, true));
    c.ffn_dim = int(g.integer(a + "feed_forward_length", 1, big, true));
    c.n_heads = int(g.integer(a + "attention.head_count", 1, big, true));
    c.n_kv_heads = int(g.integer(a + "attention.head_count_kv", 1, big, false, c.n_heads));
    if (!g.find(a + "attention.key_length") && c.dim % c.n_heads != 0)
        fail("%s: embedding_length %d is not a multiple of head_count %d", file, c.dim, c.n_heads);
    c.head_dim = int(g.integer(a + "attention.key_length", 1, big, false, c.dim / c.n_heads));
    if (g.integer(a + "attention.value_length", 1, big, false, c.head_dim) != c.head_dim)
        fail("%s: attention.value_length differs from key_length (not a Qwen model)", file);
    c.max_seq_len = int(g.integer(a + "context_length", 1, big, true));
    c.norm_eps = float(g.number(a + "attention.layer_norm_rms_epsilon", true));
    c.rope_theta = g.find(a + "rope.freq_base") ? g.number(a + "rope.freq_base", true) : 10000.0;  // llama.cpp's default
    std::string scaling = g.string(a + "rope.scaling.type", false, "none");
    if (scaling != "none")
        fail("%s: RoPE scaling '%s' is not supported (only the default RoPE)", file, utf8_sanitize(scaling).c_str());
    c.qkv_bias = c.arch == ARCH_QWEN2;  // llama.cpp's qwen2 has q/k/v biases, qwen3 none but q/k norms
    c.qk_norm = c.arch == ARCH_QWEN3;
}

// Undoes GPT-2's byte-to-unicode mapping: printable bytes stand for themselves, the other 68 byte values are
// U+0100.. in byte order. code_byte[cp] = the byte, or -1 (cp < 0x144).
struct ByteLevel {
    int code_byte[0x144];
    ByteLevel() {
        for (int& b : code_byte) b = -1;
        int shifted = 0;
        for (int b = 0; b < 256; b++) {
            bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
            code_byte[printable ? b : 256 + shifted++] = b;
        }
    }
    // The raw bytes of a byte-level token string, or false when a character is not in the alphabet.
    bool decode(const std::string& s, std::string& out) const {
        out.clear();
        for (size_t i = 0; i < s.size();) {
            uint32_t cp;
            int n = utf8_decode(reinterpret_cast<const uint8_t*>(s.data()) + i, s.size() - i, &cp);
            if (n <= 0 || cp >= 0x144 || code_byte[cp] < 0) return false;
            out += char(code_byte[cp]);
            i += size_t(n);
        }
        return !out.empty();
    }
};

// The tokenizer: llama.cpp's 'gpt2' model (byte-level BPE) with the 'qwen2' pre-tokenizer. Normal tokens are
// byte-level strings, control tokens (<|im_end|>) special added tokens, user-defined ones (<think>) added
// non-special tokens; the unused [PADi] entries that pad the list to the vocabulary size are dropped (ids stay
// contiguous: they may only trail). Merges are "left right" strings of normal tokens.
inline void gguf_vocab(const GgufMeta& g, Vocab& v) {
    const char* file = g.f.name.c_str();
    std::string model = g.string("tokenizer.ggml.model", true);
    if (model != "gpt2")
        fail("%s: tokenizer model '%s' is not supported (Qwen's byte-level BPE is 'gpt2')", file,
             utf8_sanitize(model).c_str());
    std::string pre = g.string("tokenizer.ggml.pre", false, "qwen2");
    if (pre != "qwen2")
        fail("%s: pre-tokenizer '%s' is not supported (Qwen's is 'qwen2')", file, utf8_sanitize(pre).c_str());
    uint64_t n = 0, n_types = 0, n_merges = 0;
    Reader tr = g.array("tokenizer.ggml.tokens", GG_STRING, n);
    Reader yr = g.array("tokenizer.ggml.token_type", GG_I32, n_types);
    if (n < 1 || n > (1u << 22)) fail("%s: %llu tokens is outside [1, 4194304]", file, (unsigned long long)n);
    if (n_types != n) fail("%s: %llu token types for %llu tokens", file, (unsigned long long)n_types,
                           (unsigned long long)n);
    static const ByteLevel byte_level;
    std::unordered_map<std::string, int> normal_id;  // byte-level string -> id, for the merges
    std::string raw;
    size_t n_used = 0;
    for (uint64_t i = 0; i < n; i++) {
        std::string text = tr.bytes(size_t(tr.u64()));
        int32_t type = yr.i32();
        if (type == GT_UNUSED) {
            v.tokens.emplace_back();
            v.kind.push_back(TOKEN_REGULAR);
            continue;
        }
        if (v.tokens.size() != n_used) fail("%s: token %zu is unused but token %llu is not", file, n_used,
                                            (unsigned long long)i);
        if (text.empty()) fail("%s: token %llu is empty", file, (unsigned long long)i);
        if (type == GT_NORMAL) {
            if (!byte_level.decode(text, raw))
                fail("%s: token %llu is not in the byte-level alphabet", file, (unsigned long long)i);
            normal_id.emplace(text, int(i));
            v.tokens.push_back(raw);
            v.kind.push_back(TOKEN_REGULAR);
        } else if (type == GT_CONTROL || type == GT_USER_DEFINED) {
            if (!utf8_valid(text)) fail("%s: token %llu is not valid UTF-8", file, (unsigned long long)i);
            v.tokens.push_back(text);
            v.kind.push_back(type == GT_CONTROL ? TOKEN_SPECIAL : TOKEN_ADDED);
        } else {
            fail("%s: token %llu has type %d, which a byte-level BPE vocabulary does not use", file,
                 (unsigned long long)i, type);
        }
        n_used = v.tokens.size();
    }
    v.tokens.resize(n_used);
    v.kind.resize(n_used);
    Reader mr = g.array("tokenizer.ggml.merges", GG_STRING, n_merges);
    v.merges.reserve(size_t(n_merges));
    for (uint64_t i = 0; i < n_merges; i++) {
        std::string m = mr.bytes(size_t(mr.u64()));
        size_t space = m.find(' ');
        auto left = space == std::string::npos ? normal_id.end() : normal_id.find(m.substr(0, space));
        auto right = space == std::string::npos ? normal_id.end() : normal_id.find(m.substr(space + 1));
        if (left == normal_id.end() || right == normal_id.end())
            fail("%s: merge %llu is not two tokens of the vocabulary separated by a space", file,
                 (unsigned long long)i);
        v.merges.emplace_back(left->second, right->second);
    }
    check_merges(file, v);
}

// The default system prompt of a ChatML template: the text of a string literal '<|im_start|>system\n...<|im_end|>'
// in it ('\n' written as a newline or as \n), its Jinja escapes undone; "" when there is none. The text may not
// contain the literal's own quote (unless escaped) or a Jinja brace, so a match never spans two literals. The
// same rule as tools/export.py's default_system_prompt.
inline std::string template_default_system(const std::string& t) {
    static const std::string start = "<|im_start|>system", end = "<|im_end|>";
    for (size_t i = 0; i + 1 + start.size() < t.size(); i++) {
        char quote = t[i];
        if ((quote != '\'' && quote != '"') || t.compare(i + 1, start.size(), start) != 0) continue;
        size_t j = i + 1 + start.size();
        if (t[j] == '\n') j += 1;
        else if (t.compare(j, 2, "\\n") == 0) j += 2;
        else continue;
        for (size_t k = j; k < t.size();) {
            if (k > j && t.compare(k, end.size(), end) == 0) {  // the shortest text that ends at <|im_end|>
                std::string out;
                for (size_t e = j; e < k; e++) {
                    if (t[e] != '\\') { out += t[e]; continue; }
                    char c = t[++e];
                    out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
                }
                return out;
            }
            if (t[k] == '\\' && k + 1 < t.size() && t[k + 1] != '\n') k += 2;  // an escaped character
            else if (t[k] == '\\' || t[k] == quote || t[k] == '{' || t[k] == '}') break;
            else k++;
        }
    }
    return "";
}

// Chat facts, as tools/export.py derives them from a checkpoint: the model name, the template's default system
// prompt and <think> mode, the stop ids (the eos and eot ids, then <|im_end|> and <|endoftext|>: the end-of-turn
// and end-of-text tokens llama.cpp also stops on), the sampling defaults of general.sampling.*.
inline void gguf_chat(const GgufMeta& g, const Vocab& v, const std::string& path, ChatInfo& chat) {
    const char* file = g.f.name.c_str();
    std::string base = path.substr(path.find_last_of('/') + 1);
    if (base.size() > 5 && base.compare(base.size() - 5, 5, ".gguf") == 0) base.resize(base.size() - 5);
    chat.model_name = utf8_sanitize(g.has_string("general.name") ? g.string("general.name", true) : base);
    std::string tmpl = g.string("tokenizer.chat_template", false);
    chat.default_system = template_default_system(tmpl);
    chat.has_default_system = !chat.default_system.empty();
    chat.thinking = tmpl.find("<think>") != std::string::npos;
    const int n_tokens = int(v.tokens.size());
    std::vector<int> stops;
    for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"})
        if (g.find(key)) stops.push_back(int(g.integer(key, 0, n_tokens - 1, true)));
    for (int i = 0; i < n_tokens; i++)
        if (v.kind[size_t(i)] == TOKEN_SPECIAL && (v.tokens[size_t(i)] == "<|im_end|>" || v.tokens[size_t(i)] == "<|endoftext|>"))
            stops.push_back(i);
    for (int id : stops)
        if (std::find(chat.stop_ids.begin(), chat.stop_ids.end(), id) == chat.stop_ids.end()) chat.stop_ids.push_back(id);
    if (chat.stop_ids.empty()) fail("%s: no stop token (no eos_token_id and no <|im_end|> token)", file);
    if (chat.stop_ids.size() > size_t(MAX_STOP_IDS)) chat.stop_ids.resize(size_t(MAX_STOP_IDS));
    chat.temperature = float(g.number("general.sampling.temp", false));
    chat.top_p = float(g.number("general.sampling.top_p", false));
    chat.top_k = int(g.integer("general.sampling.top_k", 0, 1 << 30, false, -1));
    chat.repetition_penalty = float(g.number("general.sampling.penalty_repeat", false));
    check_sampling(file, chat);
}

// ----------------------------------------------------------------------------
// GGUF tensors -> Weights
// ----------------------------------------------------------------------------

// Points every weight of tensor_table at its GGUF tensor ("blk.N." + the table's GGUF name), whichever part
// holds it: a matrix of any readable type with the shape (cols, rows) in ggml order; a vector (cols), F32
// in place or F16/BF16 widened into m.widened. A tensor left over is an error (a weight this engine would
// silently ignore, such as Qwen3's o_proj bias).
inline void gguf_weights(std::vector<GgufFile>& files, Model& m) {
    const Config& c = m.config;
    std::unordered_map<std::string, GgufTensor*> by_name;
    for (GgufFile& f : files)
        for (GgufTensor& t : f.tensors)
            if (!by_name.emplace(t.name, &t).second)
                fail("%s: tensor '%s' is also in another part", f.name.c_str(), t.name.c_str());
    size_t n_widened = 0;
    for (const TensorSpec& s : tensor_table(c))
        if (s.kind != TensorSpec::MATRIX) n_widened += size_t(s.cols) * size_t(s.per_layer ? c.n_layers : 1);
    m.widened.assign(n_widened, 0.0f);
    size_t widened_at = 0;
    const char* file = files[0].name.c_str();
    for_each_weight(c, m.weights, [&](const TensorSpec& s, int l, Tensor& view) {
        std::string name = (l >= 0 ? "blk." + std::to_string(l) + "." : std::string()) + s.gguf;
        auto it = by_name.find(name);
        if (it == by_name.end()) fail("%s: tensor '%s' is missing", file, name.c_str());
        GgufTensor& t = *it->second;
        t.used = true;
        bool matrix = s.kind == TensorSpec::MATRIX;
        const uint64_t want[2] = {uint64_t(s.cols), uint64_t(s.rows)};  // ggml order: the row length first
        if (t.n_dims != (matrix ? 2 : 1) || t.ne[0] != want[0] || (matrix && t.ne[1] != want[1]))
            fail("%s: tensor '%s' has shape %s, the metadata implies %s (ggml order)", file, name.c_str(),
                 shape_str(t.n_dims, t.ne).c_str(), shape_str(matrix ? 2 : 1, want).c_str());
        view.rows = s.rows, view.cols = s.cols;
        if (matrix || t.type == DT_F32) {
            if (!matrix && reinterpret_cast<uintptr_t>(t.data) % 4 != 0)
                fail("%s: tensor '%s' is not 4-byte aligned", file, name.c_str());
            view.type = t.type;
            view.data = t.data;
        } else if (t.type == DT_F16 || t.type == DT_BF16) {
            float* dst = &m.widened[widened_at];
            Tensor src{t.data, t.type, 1, s.cols};
            dequantize_row(src, 0, dst);
            widened_at += size_t(s.cols);
            view.type = DT_F32;
            view.data = reinterpret_cast<const uint8_t*>(dst);
        } else {
            fail("%s: tensor '%s' is %s; a norm or bias must be F32, F16 or BF16", file, name.c_str(),
                 dtype_name(t.type).c_str());
        }
    });
    if (c.tied) m.weights.lm_head = m.weights.token_embd;
    for (const GgufFile& f : files)
        for (const GgufTensor& t : f.tensors)
            if (!t.used)
                fail("%s: unexpected tensor '%s' (not part of a %s model as this engine runs it)", f.name.c_str(),
                     t.name.c_str(), c.arch == ARCH_QWEN3 ? "qwen3" : "qwen2");
}

// The split keys of a file: its part number (0-based) and the number of parts (1 when not split).
inline void gguf_split(const GgufFile& f, int& no, int& count) {
    GgufMeta g{f};
    count = int(g.integer("split.count", 1, 9999, false, 1));
    no = int(g.integer("split.no", 0, count - 1, false, 0));
}

// A Model from the parsed parts of a GGUF (one file, or a split's parts in order). `path` names the model.
inline Model gguf_model(std::vector<GgufFile>& files, const std::string& path, bool need_weights) {
    const GgufFile& f = files[0];
    const char* file = f.name.c_str();
    GgufMeta g{f};
    Model m;
    size_t n_tensors = 0;
    for (const GgufFile& p : files) n_tensors += p.tensors.size();
    m.has_weights = n_tensors > 0;
    if (need_weights && !m.has_weights)
        fail("%s: this file has only a tokenizer (no tensors); a model needs the weights", file);
    if (files.size() > 1 && g.integer("split.tensors.count", 0, 1 << 30, true) != int64_t(n_tensors))
        fail("%s: split.tensors.count says %lld tensors, the %zu parts hold %zu", file,
             (long long)g.integer("split.tensors.count", 0, 1 << 30, true), files.size(), n_tensors);
    gguf_vocab(g, m.vocab);
    gguf_chat(g, m.vocab, path, m.chat);
    if (!m.has_weights) return m;
    Config& c = m.config;
    gguf_config(g, c);
    bool untied = false;
    for (const GgufFile& p : files)
        for (const GgufTensor& t : p.tensors) untied = untied || t.name == "output.weight";
    c.tied = !untied;
    const GgufTensor* embd = nullptr;  // its rows are the vocabulary size
    for (const GgufFile& p : files)
        for (const GgufTensor& t : p.tensors) embd = t.name == "token_embd.weight" ? &t : embd;
    if (!embd) fail("%s: tensor 'token_embd.weight' is missing", file);
    c.vocab_size = int(std::min<uint64_t>(embd->ne[embd->n_dims - 1], uint64_t(1) << 30));
    check_config(file, c);
    if (int(m.vocab.tokens.size()) > c.vocab_size)
        fail("%s: tokenizer has %zu tokens but the embedding has %d rows", file, m.vocab.tokens.size(), c.vocab_size);
    gguf_weights(files, m);
    return m;
}

// The file name of part `no` (0-based) of `count`, given the first part's name NAME-00001-of-0000N.gguf.
inline std::string gguf_part_name(const std::string& first, int no, int count) {
    char tail[32];
    snprintf(tail, sizeof tail, "-00001-of-%05d.gguf", count);
    size_t n = strlen(tail);
    if (first.size() <= n || first.compare(first.size() - n, n, tail) != 0)
        fail("%s: a split GGUF's first part must be named NAME%s", first.c_str(), tail);
    snprintf(tail, sizeof tail, "-%05d-of-%05d.gguf", no + 1, count);
    return first.substr(0, first.size() - n) + tail;
}

// ----------------------------------------------------------------------------
// Loading: a whole file (weights.bin or GGUF, recognised by its magic), validated, into a Model
// ----------------------------------------------------------------------------

// Validates a whole file image and fills a Model whose weights point into `data` (the caller keeps it
// alive). `file` names the file in messages. The fuzzer's entry point; a split GGUF needs load_file.
inline Model parse_model(const uint8_t* data, size_t size, const std::string& file, bool need_weights) {
    if (!is_gguf(data, size)) return parse_weights_bin(data, size, file, need_weights);
    std::vector<GgufFile> files;
    files.push_back(parse_gguf_file(data, size, file));
    int no, count;
    gguf_split(files[0], no, count);
    if (count > 1) fail("%s: part %d of a %d-part GGUF: load it by its file name", file.c_str(), no + 1, count);
    return gguf_model(files, file, need_weights);
}

// Maps the file at `path` (and, for the first part of a split GGUF, the other parts beside it) and parses it.
inline Model load_file(const std::string& path, bool need_weights) {
    MappedFile f(path);
    if (!is_gguf(f.data, f.size)) {
        Model m = parse_weights_bin(f.data, f.size, path, need_weights);
        m.file = std::move(f);  // the mapping's address does not change, so the weight pointers stay valid
        return m;
    }
    std::vector<MappedFile> maps;
    std::vector<GgufFile> files;
    maps.push_back(std::move(f));
    files.push_back(parse_gguf_file(maps[0].data, maps[0].size, path));
    int no, count;
    gguf_split(files[0], no, count);
    if (no != 0)
        fail("%s: part %d of a %d-part GGUF: name its first part (NAME-00001-of-%05d.gguf)", path.c_str(), no + 1,
             count, count);
    for (int i = 1; i < count; i++) {
        std::string name = gguf_part_name(path, i, count);
        maps.emplace_back(name);
        files.push_back(parse_gguf_file(maps.back().data, maps.back().size, name));
        int part_no, part_count;
        gguf_split(files.back(), part_no, part_count);
        if (part_no != i || part_count != count)
            fail("%s: its split keys say part %d of %d, expected part %d of %d", name.c_str(), part_no + 1,
                 part_count, i + 1, count);
    }
    Model m = gguf_model(files, path, need_weights);
    m.file = std::move(maps[0]);
    for (size_t i = 1; i < maps.size(); i++) m.parts.push_back(std::move(maps[i]));
    return m;
}

// A model: fails if the file has no weights.
inline Model load_model(const std::string& path) { return load_file(path, true); }

// The tokenizer and chat facts of any model file (weights optional: tokenizer-only files are fine).
inline Model load_tokenizer(const std::string& path) { return load_file(path, false); }

// ============================================================================
// Tokenizer: UTF-8, NFC, the Qwen2 pre-tokenizer, byte-level BPE, ChatML prompts
// ============================================================================
// Text -> ids, exactly as the Hugging Face tokenizer of Qwen1.5/2/2.5/3 does it:
//   1. split the text on added tokens (<|im_end|>, <think>, ...): leftmost, then longest match;
//   2. NFC-normalise each piece between them;
//   3. cut each piece into pre-tokens with the Qwen2 regex (hand-written matcher below);
//   4. byte-level BPE on each pre-token's UTF-8 bytes: repeatedly merge the adjacent pair of lowest rank.
// Input must be valid UTF-8: invalid input is refused (fail) rather than silently replaced, so that what
// the model sees is always what the caller wrote. Decoding is the concatenation of token bytes.

// ----------------------------------------------------------------------------
// UTF-8: strict decoding, validation and repair
// ----------------------------------------------------------------------------

constexpr int UTF8_INVALID = 0;     // utf8_decode: not a valid sequence
constexpr int UTF8_TRUNCATED = -1;  // utf8_decode: a valid start, but the input ends before its last byte

// Decodes the code point at s[0..n) (n >= 1): returns its length 1..4 and sets *cp, or UTF8_INVALID, or
// UTF8_TRUNCATED. Strict: no overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
// The second byte's allowed range depends on the first (E0: A0..BF, ED: 80..9F, F0: 90..BF, F4: 80..8F);
// that one check rules out all three cases.
inline int utf8_decode(const uint8_t* s, size_t n, uint32_t* cp) {
    uint8_t b0 = s[0];
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    int len;
    uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        return UTF8_INVALID;  // continuation byte, C0/C1 (overlong) or F5..FF
    }
    uint32_t c = b0 & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if (size_t(i) >= n) return UTF8_TRUNCATED;
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return UTF8_INVALID;
        c = (c << 6) | (b & 0x3F);
    }
    *cp = c;
    return len;
}

// Offset of the first byte that does not start a valid sequence, or s.size() when s is valid UTF-8.
inline size_t utf8_first_invalid(const std::string& s) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.data());
    size_t i = 0, n = s.size();
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp = 0;
        int len = utf8_decode(p + i, n - i, &cp);
        if (len <= 0) return i;
        i += size_t(len);
    }
    return n;
}

inline bool utf8_valid(const std::string& s) { return utf8_first_invalid(s) == s.size(); }

// s with each ill-formed sequence replaced by U+FFFD, for output that must be valid UTF-8 (JSON, a browser).
// One U+FFFD stands for each "maximal subpart" (the Unicode recommendation that Python's errors="replace"
// and browsers follow): a valid lead byte and the continuation bytes that still fit it, or one stray byte.
inline std::string utf8_sanitize(const std::string& s) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.data());
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0, n = s.size(); i < n;) {
        uint32_t cp = 0;
        int len = utf8_decode(p + i, n - i, &cp);
        if (len > 0) {
            out.append(s, i, size_t(len));
            i += size_t(len);
            continue;
        }
        out += "\xEF\xBF\xBD";
        size_t k = 1;  // the lead byte, then each next byte while p[i..i+k] is still the start of a character
        uint32_t ignored;
        while (i + k < n && utf8_decode(p + i, k + 1, &ignored) == UTF8_TRUNCATED) k++;
        i += k;
    }
    return out;
}

// Appends the UTF-8 bytes of a Unicode scalar value.
inline void utf8_append(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

// Code points of valid UTF-8 (the caller has checked it).
inline std::vector<uint32_t> utf8_to_code_points(const std::string& s) {
    std::vector<uint32_t> cps;
    cps.reserve(s.size());
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.data());
    for (size_t i = 0; i < s.size();) {
        uint32_t cp = 0;
        i += size_t(utf8_decode(p + i, s.size() - i, &cp));
        cps.push_back(cp);
    }
    return cps;
}

// ----------------------------------------------------------------------------
// Unicode properties: declared here, defined after the generated tables at the end of the file
// ----------------------------------------------------------------------------
// Each is a binary search in a table that tools/gen_unicode.py writes from Unicode's data.
inline bool unicode_letter(uint32_t cp);     // \p{L}
inline bool unicode_number(uint32_t cp);     // \p{N}
inline bool unicode_space(uint32_t cp);      // \s
inline bool unicode_nfc_maybe(uint32_t cp);  // NFC_Quick_Check is No or Maybe
inline int combining_class(uint32_t cp);     // canonical combining class (0 for starters)
// Appends the full canonical decomposition of cp (Hangul excluded); false if cp has none.
inline bool canonical_decomposition(uint32_t cp, std::vector<uint32_t>& out);
// The primary composite of (a, b), Hangul excluded; 0 if there is none.
inline uint32_t canonical_composite(uint32_t a, uint32_t b);

// Character classes of the pre-tokenizer regex, as bit flags.
enum CharClass : uint8_t {
    CC_LETTER = 1,   // \p{L}
    CC_NUMBER = 2,   // \p{N}
    CC_SPACE = 4,    // \s
    CC_NEWLINE = 8,  // \r or \n (also CC_SPACE)
};

inline uint8_t char_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) - 'a' < 26) return CC_LETTER;
        if (cp - '0' < 10) return CC_NUMBER;
        if (cp == '\n' || cp == '\r') return CC_SPACE | CC_NEWLINE;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CC_SPACE;
        return 0;
    }
    if (unicode_letter(cp)) return CC_LETTER;
    if (unicode_number(cp)) return CC_NUMBER;
    if (unicode_space(cp)) return CC_SPACE;
    return 0;
}

// ----------------------------------------------------------------------------
// NFC normalisation: decompose, reorder marks, compose
// ----------------------------------------------------------------------------
// NFC = canonical decomposition, then canonical ordering of combining marks, then canonical composition.
// Almost all real text is NFC already, which the quick check proves in one pass without allocating.

// Hangul syllables are algorithmic: S = 0xAC00 + (L * 21 + V) * 28 + T.
constexpr uint32_t HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7;
constexpr uint32_t HANGUL_L_COUNT = 19, HANGUL_V_COUNT = 21, HANGUL_T_COUNT = 28;
constexpr uint32_t HANGUL_S_COUNT = HANGUL_L_COUNT * HANGUL_V_COUNT * HANGUL_T_COUNT;

// True if s is certainly NFC: every character has NFC_Quick_Check = Yes and the marks are in canonical order.
inline bool nfc_quick_check(const std::string& s) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.data());
    int last_ccc = 0;
    for (size_t i = 0; i < s.size();) {
        if (p[i] < 0x80) {
            i++;
            last_ccc = 0;
            continue;
        }
        uint32_t cp = 0;
        i += size_t(utf8_decode(p + i, s.size() - i, &cp));
        if (cp < 0x300) {
            last_ccc = 0;
            continue;
        }
        if (unicode_nfc_maybe(cp)) return false;
        int ccc = combining_class(cp);
        if (ccc != 0 && ccc < last_ccc) return false;
        last_ccc = ccc;
    }
    return true;
}

// Appends the full canonical decomposition of cp (Hangul syllables algorithmically into L V [T]), or cp itself.
inline void nfc_decompose(uint32_t cp, std::vector<uint32_t>& out) {
    if (cp - HANGUL_S < HANGUL_S_COUNT) {
        uint32_t s = cp - HANGUL_S, t = s % HANGUL_T_COUNT;
        out.push_back(HANGUL_L + s / (HANGUL_V_COUNT * HANGUL_T_COUNT));
        out.push_back(HANGUL_V + (s % (HANGUL_V_COUNT * HANGUL_T_COUNT)) / HANGUL_T_COUNT);
        if (t) out.push_back(HANGUL_T + t);
        return;
    }
    if (!canonical_decomposition(cp, out)) out.push_back(cp);
}

// The primary composite of (a, b), or 0 if there is none: Hangul L + V -> LV and LV + T -> LVT
// algorithmically, everything else from the table.
inline uint32_t nfc_compose(uint32_t a, uint32_t b) {
    if (a - HANGUL_L < HANGUL_L_COUNT && b - HANGUL_V < HANGUL_V_COUNT)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_V_COUNT + (b - HANGUL_V)) * HANGUL_T_COUNT;
    if (a - HANGUL_S < HANGUL_S_COUNT && (a - HANGUL_S) % HANGUL_T_COUNT == 0 && b - HANGUL_T - 1 < HANGUL_T_COUNT - 1)
        return a + (b - HANGUL_T);
    return canonical_composite(a, b);
}

// NFC of valid UTF-8.
inline std::string nfc(const std::string& s) {
    if (nfc_quick_check(s)) return s;
    std::vector<uint32_t> d;
    d.reserve(s.size() + 8);
    for (uint32_t cp : utf8_to_code_points(s)) nfc_decompose(cp, d);

    // Canonical ordering: a stable sort by combining class within each run of non-starters (class != 0).
    // O(n log n) per run: text can hold a run of any length (an insertion sort is quadratic on alternating
    // classes, e.g. U+0301 U+0316 repeated).
    std::vector<int> ccc(d.size());
    for (size_t i = 0; i < d.size(); i++) ccc[i] = combining_class(d[i]);
    std::vector<std::pair<int, uint32_t>> run;  // (class, code point) of one run
    for (size_t i = 0, j; i < d.size(); i = j + 1) {
        for (j = i; j < d.size() && ccc[j] != 0; j++) {}
        if (j - i < 2) continue;
        run.clear();
        for (size_t k = i; k < j; k++) run.emplace_back(ccc[k], d[k]);
        std::stable_sort(run.begin(), run.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        for (size_t k = i; k < j; k++) ccc[k] = run[k - i].first, d[k] = run[k - i].second;
    }

    // Composition: a character combines with the last starter unless a character between them is a
    // starter or has a class >= its own ("blocked").
    std::vector<uint32_t> out;
    out.reserve(d.size());
    long starter = -1;  // index in out of the last starter
    int last_ccc = 0;   // class of the last character appended after that starter
    for (size_t i = 0; i < d.size(); i++) {
        uint32_t c = d[i];
        int cc = ccc[i];
        bool adjacent = starter >= 0 && size_t(starter) + 1 == out.size();
        if (starter >= 0 && (adjacent || (last_ccc != 0 && last_ccc < cc))) {
            if (uint32_t comp = nfc_compose(out[starter], c)) {
                out[starter] = comp;
                continue;
            }
        }
        if (cc == 0) starter = long(out.size());
        last_ccc = cc;
        out.push_back(c);
    }
    std::string r;
    r.reserve(s.size());
    for (uint32_t cp : out) utf8_append(r, cp);
    return r;
}

// ----------------------------------------------------------------------------
// Pre-tokenizer: the Qwen2 split regex, matched by hand
// ----------------------------------------------------------------------------
// The Qwen2 pre-tokenizer is this regex; each match is one pre-token (every character matches one of the
// alternatives, so the matches tile the text):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N} | ?[^\s\p{L}\p{N}]+[\r\n]*
//   | \s*[\r\n]+ | \s+(?!\S) | \s+
// The first alternative that matches at a position wins; each is greedy. Below, one function per
// alternative returns the match length at i (0 = no match), working on code points and their classes.

struct PreTokenText {          // the text being pre-tokenized, one entry per code point
    std::vector<uint32_t> cp;  // (n) u32 code points
    std::vector<uint8_t> cls;  // (n) u8 CharClass bits
    std::vector<size_t> byte;  // (n + 1) byte offset of each code point in the UTF-8 text, then the text's length
};

// (?i:'s|'t|'re|'ve|'m|'ll|'d): ASCII case folding, plus U+017F (long s), which folds to 's'.
inline size_t match_contraction(const PreTokenText& t, size_t i) {
    size_t n = t.cp.size();
    if (t.cp[i] != '\'' || i + 1 >= n) return 0;
    auto lower = [&](size_t k) { return k < n && t.cp[k] < 0x80 ? (t.cp[k] | 0x20) : t.cp[k]; };
    uint32_t a = lower(i + 1);
    if (a == 's' || a == 0x17F || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 >= n) return 0;
    uint32_t b = lower(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

// [^\r\n\p{L}\p{N}]?\p{L}+
inline size_t match_word(const PreTokenText& t, size_t i) {
    size_t n = t.cp.size(), j = i;
    if (!(t.cls[j] & (CC_LETTER | CC_NUMBER | CC_NEWLINE)) && j + 1 < n) j++;  // the optional prefix
    if (!(t.cls[j] & CC_LETTER)) return 0;
    while (j < n && (t.cls[j] & CC_LETTER)) j++;
    return j - i;
}

// ` ?[^\s\p{L}\p{N}]+[\r\n]*`: a run of punctuation/symbols, with an optional leading space.
inline size_t match_symbols(const PreTokenText& t, size_t i) {
    const uint8_t other = CC_LETTER | CC_NUMBER | CC_SPACE;
    size_t n = t.cp.size(), j = i;
    if (t.cp[j] == ' ' && j + 1 < n && !(t.cls[j + 1] & other)) j++;
    if (t.cls[j] & other) return 0;
    while (j < n && !(t.cls[j] & other)) j++;
    while (j < n && (t.cls[j] & CC_NEWLINE)) j++;
    return j - i;
}

// The three white-space alternatives, on the run of white space starting at i:
//   \s*[\r\n]+  -> up to and including the run's last \r or \n;
//   \s+(?!\S)   -> the whole run at the end of the text, else all of it but its last character;
//   \s+         -> the whole run (a single space before a non-space character).
inline size_t match_space(const PreTokenText& t, size_t i) {
    size_t n = t.cp.size(), end = i;
    size_t last_newline = SIZE_MAX;
    while (end < n && (t.cls[end] & CC_SPACE)) {
        if (t.cls[end] & CC_NEWLINE) last_newline = end;
        end++;
    }
    if (end == i) return 0;
    if (last_newline != SIZE_MAX) return last_newline + 1 - i;
    if (end == n || end - i == 1) return end - i;
    return end - 1 - i;
}

// Calls emit(begin_byte, end_byte) for each pre-token of valid UTF-8 `s`, in order.
template <typename Emit>
inline void pre_tokenize(const std::string& s, PreTokenText& t, Emit emit) {
    t.cp.clear();
    t.cls.clear();
    t.byte.clear();
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.data());
    for (size_t i = 0; i < s.size();) {
        uint32_t cp = 0;
        int len = utf8_decode(p + i, s.size() - i, &cp);
        t.cp.push_back(cp);
        t.cls.push_back(char_class(cp));
        t.byte.push_back(i);
        i += size_t(len);
    }
    t.byte.push_back(s.size());
    for (size_t i = 0, n = t.cp.size(); i < n;) {
        size_t len = match_contraction(t, i);
        if (!len) len = match_word(t, i);
        if (!len && (t.cls[i] & CC_NUMBER)) len = 1;
        if (!len) len = match_symbols(t, i);
        if (!len) len = match_space(t, i);
        emit(t.byte[i], t.byte[i + len]);
        i += len;
    }
}

// ----------------------------------------------------------------------------
// Merge table: (left id, right id) -> rank
// ----------------------------------------------------------------------------
// An open-addressing hash table with linear probing: the BPE loop looks up every adjacent pair, so this
// lookup is the tokenizer's hot spot.
struct MergeTable {
    struct Slot {
        uint64_t key = UINT64_MAX;  // (left << 32) | right; UINT64_MAX = empty
        int rank = -1;
    };
    std::vector<Slot> slots;  // (capacity) power of two, at most half full
    uint64_t mask = 0;

    static uint64_t key_of(int left, int right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }
    static uint64_t hash(uint64_t key) { return (key * 0x9E3779B97F4A7C15ull) >> 20; }

    void build(const std::vector<std::pair<int, int>>& pairs) {
        size_t cap = 16;
        while (cap < 2 * pairs.size()) cap *= 2;
        slots.assign(cap, Slot{});
        mask = cap - 1;
        for (size_t r = 0; r < pairs.size(); r++) {
            uint64_t key = key_of(pairs[r].first, pairs[r].second);
            uint64_t h = hash(key) & mask;
            while (slots[h].key != UINT64_MAX && slots[h].key != key) h = (h + 1) & mask;
            slots[h] = Slot{key, int(r)};  // a repeated pair keeps its last rank, as Hugging Face's map does
        }
    }
    // The rank of the pair, or -1 if it does not merge.
    int rank(int left, int right) const {
        uint64_t key = key_of(left, right);
        for (uint64_t h = hash(key) & mask;; h = (h + 1) & mask) {
            if (slots[h].key == key) return slots[h].rank;
            if (slots[h].key == UINT64_MAX) return -1;
        }
    }
};

// ----------------------------------------------------------------------------
// Tokenizer: added tokens, then NFC, pre-tokens and BPE
// ----------------------------------------------------------------------------

// Immutable once built: encode and decode keep their scratch space per call, so one Tokenizer can serve
// several threads at once.
struct Tokenizer {
    explicit Tokenizer(const Vocab& v);
    int n_tokens() const { return int(tokens_.size()); }
    // parse_special: special added tokens (kind 1, e.g. <|im_end|>) written in the text become their ids,
    // as Hugging Face does by default. With false they are tokenized as plain text (so user text cannot
    // forge them), while non-special added tokens (kind 2, e.g. Qwen3's <think>) are still matched.
    // Invalid UTF-8 fails with "invalid UTF-8 at byte N".
    std::vector<int> encode(const std::string& text, bool parse_special) const;
    // As encode, but a special token is matched only where it lies wholly inside one of `trusted`, a
    // sorted list of [begin, end) byte ranges of the text (chat_tokens: the template's own markers).
    std::vector<int> encode_trusted(const std::string& text,
                                    const std::vector<std::pair<size_t, size_t>>& trusted) const;
    std::string decode(const std::vector<int>& ids) const;  // raw bytes; may be invalid UTF-8 mid-stream
    const std::string& token_bytes(int id) const;
    int find(const std::string& token_text) const;  // id of a token with exactly these bytes, or -1

  private:
    struct AddedToken {
        std::string text;
        int id;
        bool special;
    };
    // Scratch space of one encode call.
    struct Work {
        PreTokenText pre;
        std::vector<int> id, prev, next;  // (n) for a pre-token of n bytes: BPE symbols as a linked list
        std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<uint64_t>> queue;  // rank << 32 | pos
        // Short pre-tokens repeat (words), so their token ids are remembered: pre-token -> (offset, count) in
        // cached_ids. Bounded: cleared when full, which keeps a long text's memory flat.
        std::unordered_map<std::string, std::pair<uint32_t, uint32_t>> cache;
        std::vector<int> cached_ids;  // (sum of counts) token ids of the cached pre-tokens, back to back
    };

    void encode_text(const std::string& text, Work& w, std::vector<int>& out) const;
    void bpe(const uint8_t* s, size_t n, Work& w, std::vector<int>& out) const;

    std::vector<std::string> tokens_;           // (n_tokens) bytes of each token
    std::unordered_map<std::string, int> ids_;  // bytes -> token id (regular tokens win over added ones)
    int byte_id_[256];                          // (256) token id of the single-byte token of each byte value
    MergeTable merges_;                             // (left id, right id) -> rank
    std::vector<std::pair<int, int>> merge_pairs_;  // (n_merges) (left id, right id) of each rank
    std::vector<int> merge_result_;                 // (n_merges) token id that each rank's merge makes
    std::vector<AddedToken> added_;                 // (n_added) sorted by first byte, then longest first
    uint8_t added_first_[256] = {};                 // (256) 1 if some added token starts with this byte
};

// The loader has validated a Vocab from a file, but one can also be built by hand (tests), so the facts the
// tokenizer relies on are checked again here.
inline Tokenizer::Tokenizer(const Vocab& v) {
    const size_t n = v.tokens.size();
    if (v.kind.size() != n) fail("tokenizer: %zu tokens but %zu kinds", n, v.kind.size());
    tokens_ = v.tokens;
    ids_.reserve(n);
    for (size_t i = 0; i < n; i++)
        if (v.kind[i] == TOKEN_REGULAR) ids_.emplace(tokens_[i], int(i));
    for (size_t i = 0; i < n; i++) {
        if (v.kind[i] == TOKEN_REGULAR) continue;
        if (tokens_[i].empty()) fail("tokenizer: added token %zu is empty", i);
        ids_.emplace(tokens_[i], int(i));
        added_.push_back({tokens_[i], int(i), v.kind[i] == TOKEN_SPECIAL});
        added_first_[uint8_t(tokens_[i][0])] = 1;
    }
    std::sort(added_.begin(), added_.end(), [](const AddedToken& a, const AddedToken& b) {
        if (a.text[0] != b.text[0]) return uint8_t(a.text[0]) < uint8_t(b.text[0]);
        return a.text.size() > b.text.size();
    });
    for (int b = 0; b < 256; b++) {
        auto it = ids_.find(std::string(1, char(b)));
        if (it == ids_.end() || v.kind[it->second] != TOKEN_REGULAR)
            fail("tokenizer: no token for the byte 0x%02X (a byte-level vocabulary has all 256)", b);
        byte_id_[b] = it->second;
    }
    std::vector<int> merged(v.merges.size());
    for (size_t r = 0; r < v.merges.size(); r++) {
        auto [a, b] = v.merges[r];
        if (a < 0 || b < 0 || size_t(a) >= n || size_t(b) >= n)
            fail("tokenizer: merge %zu (%d, %d) is out of range", r, a, b);
        auto it = ids_.find(tokens_[a] + tokens_[b]);
        if (it == ids_.end() || v.kind[it->second] != TOKEN_REGULAR)
            fail("tokenizer: merge %zu (%d, %d) makes no token", r, a, b);
        merged[r] = it->second;
    }
    merges_.build(v.merges);
    merge_pairs_ = v.merges;
    merge_result_ = std::move(merged);
}

inline const std::string& Tokenizer::token_bytes(int id) const {
    if (id < 0 || id >= n_tokens()) fail("token id %d is out of range [0, %d)", id, n_tokens());
    return tokens_[id];
}

inline int Tokenizer::find(const std::string& token_text) const {
    auto it = ids_.find(token_text);
    return it == ids_.end() ? -1 : it->second;
}

inline std::string Tokenizer::decode(const std::vector<int>& ids) const {
    std::string s;
    for (int id : ids) s += token_bytes(id);
    return s;
}

// Byte-level BPE of one pre-token. The symbols form a linked list (next[i], -1 at the end; id[i] = -1
// once merged into its left neighbour); a min-heap holds candidate pairs keyed by (rank, position), so
// the lowest-ranked pair, leftmost among equals, merges first: O(n log n). Heap entries are not removed
// when a neighbour changes; a popped entry is used only if its pair is still there with the same rank.
inline void Tokenizer::bpe(const uint8_t* s, size_t n, Work& w, std::vector<int>& out) const {
    if (n == 1) {
        out.push_back(byte_id_[s[0]]);
        return;
    }
    w.id.resize(n);
    w.next.resize(n);
    w.prev.resize(n);
    for (size_t i = 0; i < n; i++) {
        w.id[i] = byte_id_[s[i]];
        w.next[i] = i + 1 < n ? int(i + 1) : -1;
        w.prev[i] = int(i) - 1;
    }
    auto push_pair = [&](int pos) {
        if (pos < 0 || w.next[pos] < 0) return;
        int rank = merges_.rank(w.id[pos], w.id[w.next[pos]]);
        if (rank >= 0) w.queue.push((uint64_t(rank) << 32) | uint32_t(pos));
    };
    for (size_t i = 0; i + 1 < n; i++) push_pair(int(i));
    while (!w.queue.empty()) {
        uint64_t top = w.queue.top();
        w.queue.pop();
        int rank = int(top >> 32), pos = int(uint32_t(top));
        int right = w.next[pos];
        if (w.id[pos] < 0 || right < 0) continue;
        if (w.id[pos] != merge_pairs_[rank].first || w.id[right] != merge_pairs_[rank].second) continue;  // stale
        w.id[pos] = merge_result_[rank];
        w.id[right] = -1;
        w.next[pos] = w.next[right];
        if (w.next[pos] >= 0) w.prev[w.next[pos]] = pos;
        push_pair(w.prev[pos]);
        push_pair(pos);
    }
    for (int i = 0; i >= 0; i = w.next[i]) out.push_back(w.id[i]);
}

// NFC + pre-tokenizer + BPE of text that holds no added token.
inline void Tokenizer::encode_text(const std::string& text, Work& w, std::vector<int>& out) const {
    const std::string norm = nfc(text);
    const uint8_t* p = reinterpret_cast<const uint8_t*>(norm.data());
    pre_tokenize(norm, w.pre, [&](size_t begin, size_t end) {
        size_t len = end - begin;
        if (len > 24) {  // long pre-tokens are rare and rarely repeat: no caching
            bpe(p + begin, len, w, out);
            return;
        }
        std::string key(norm, begin, len);
        auto it = w.cache.find(key);
        if (it == w.cache.end()) {
            if (w.cache.size() >= 65536) {
                w.cache.clear();
                w.cached_ids.clear();
            }
            size_t offset = w.cached_ids.size();
            bpe(p + begin, len, w, w.cached_ids);
            auto entry = std::make_pair(uint32_t(offset), uint32_t(w.cached_ids.size() - offset));
            it = w.cache.emplace(std::move(key), entry).first;
        }
        const int* ids = w.cached_ids.data() + it->second.first;
        out.insert(out.end(), ids, ids + it->second.second);
    });
}

inline std::vector<int> Tokenizer::encode_trusted(const std::string& text,
                                                  const std::vector<std::pair<size_t, size_t>>& trusted) const {
    size_t bad = utf8_first_invalid(text);
    if (bad != text.size()) fail("invalid UTF-8 at byte %zu", bad);
    if (text.size() > size_t(INT32_MAX)) fail("text of %zu bytes is too long to tokenize", text.size());
    Work w;
    std::vector<int> out;
    size_t piece = 0, t = 0;  // start of the current plain-text piece; first trusted range not yet passed
    for (size_t i = 0; i < text.size(); i++) {
        if (!added_first_[uint8_t(text[i])]) continue;
        while (t < trusted.size() && trusted[t].second <= i) t++;
        const AddedToken* hit = nullptr;  // the longest added token that may match at i
        for (const AddedToken& a : added_) {
            if (a.text[0] != text[i] || text.compare(i, a.text.size(), a.text) != 0) continue;
            bool allowed =
                !a.special || (t < trusted.size() && trusted[t].first <= i && i + a.text.size() <= trusted[t].second);
            if (allowed) {
                hit = &a;
                break;
            }
        }
        if (!hit) continue;
        encode_text(text.substr(piece, i - piece), w, out);
        out.push_back(hit->id);
        i += hit->text.size() - 1;
        piece = i + 1;
    }
    encode_text(text.substr(piece), w, out);
    return out;
}

inline std::vector<int> Tokenizer::encode(const std::string& text, bool parse_special) const {
    std::vector<std::pair<size_t, size_t>> trusted;
    if (parse_special) trusted.push_back({0, text.size()});
    return encode_trusted(text, trusted);
}

// ----------------------------------------------------------------------------
// Streaming decoder: ids to UTF-8-complete text
// ----------------------------------------------------------------------------
// Tokens end in the middle of characters (an emoji is often 2-4 byte tokens). The decoder holds back an
// incomplete UTF-8 tail until the bytes that complete it arrive; bytes that can never become valid are
// passed through unchanged, so the concatenation of everything returned equals decode(all ids).
struct StreamDecoder {
    explicit StreamDecoder(const Tokenizer& t) : tok(t) {}
    std::string push(int id);
    std::string flush() { return std::exchange(pending, std::string()); }

    const Tokenizer& tok;
    std::string pending;  // (<= 3) bytes not yet returned: at most one incomplete character
};

inline std::string StreamDecoder::push(int id) {
    pending += tok.token_bytes(id);
    // An incomplete character is a lead byte followed by at most 2 continuation bytes: look for one at
    // the end, and hold it back if it is the valid beginning of a character.
    const uint8_t* p = reinterpret_cast<const uint8_t*>(pending.data());
    size_t n = pending.size(), start = n;
    while (start > 0 && n - start < 3 && (p[start - 1] & 0xC0) == 0x80) start--;
    size_t keep = 0;
    uint32_t cp = 0;
    if (start > 0 && p[start - 1] >= 0xC0 && utf8_decode(p + start - 1, n - start + 1, &cp) == UTF8_TRUNCATED)
        keep = n - start + 1;
    std::string ready = pending.substr(0, n - keep);
    pending.erase(0, n - keep);
    return ready;
}

// ----------------------------------------------------------------------------
// Chat prompts: the ChatML templates of Qwen1.5 to Qwen3
// ----------------------------------------------------------------------------
// Every Qwen chat template renders turns as "<|im_start|>{role}\n{content}<|im_end|>\n" and ends with
// the generation prompt "<|im_start|>assistant\n". Beyond that:
//   - Qwen1.5/2/2.5 insert a default system prompt when the first message is not a system message;
//   - Qwen2.5 and Qwen3 render role "tool" as a user turn wrapping "<tool_response>\n...\n</tool_response>"
//     (consecutive tool messages share one turn); this is done here for every model;
//   - Qwen2.5 and Qwen3 (ChatInfo::tools) write the tool definitions into the system turn ("# Tools ...
//     <tools>\n{json}\n...</tools> ...") and an assistant message's tool calls as
//     "<tool_call>\n{"name": "...", "arguments": {json}}\n</tool_call>" after its content, one line apart;
//     the JSON is written as the templates' tojson does (Python's json.dumps: ", " and ": " separators, keys in
//     the given order, non-ASCII as is);
//   - Qwen3 (ChatInfo::thinking) drops the reasoning ("<think>...</think>", or Message::reasoning) of
//     assistant messages before the last user query, writes it in a normalised form after it, and with
//     enable_thinking = false appends an empty "<think>\n\n</think>\n\n" to the generation prompt.
struct ToolCall {
    std::string id;         // the client's handle for it (not rendered)
    std::string name;       // the function's name
    std::string arguments;  // JSON text (an object), e.g. {"city": "Paris"}
};

struct Message {
    std::string role, content;
    std::vector<ToolCall> tool_calls = {};      // assistant: the calls it made
    std::optional<std::string> reasoning = {};  // assistant, Qwen3: its reasoning, when kept apart from content
};

struct ChatOptions {
    bool add_generation_prompt = true;
    bool enable_thinking = true;     // Qwen3: false appends "<think>\n\n</think>\n\n" after the assistant header
    bool use_default_system = true;  // insert ChatInfo::default_system when messages[0] is not a system message
    std::vector<std::string> tools;  // (n_tools) JSON text of each tool definition ({"type": "function", ...})
};

// JSON text rewritten as Python's json.dumps(ensure_ascii=False) writes it (the templates' tojson); defined with
// the JSON reader in the structured-output section.
inline std::string python_json(const std::string& json_text);

// The rendered prompt as pieces: markup (the template's own text, where special tokens are real) and
// text that came from the caller (roles, contents: special tokens in it stay plain text).
struct ChatPieces {
    std::string text;                               // the whole prompt, UTF-8
    std::vector<std::pair<size_t, size_t>> markup;  // (n_markup) sorted [begin, end) byte ranges of template text
    void add_markup(const std::string& s) {
        markup.push_back({text.size(), text.size() + s.size()});
        text += s;
    }
    void add_text(const std::string& s) { text += s; }
};

// Python's s.lstrip('\n') / s.rstrip('\n') / s.strip('\n'), which the Qwen3 template uses.
inline std::string strip_newlines(const std::string& s, bool left, bool right) {
    size_t b = 0, e = s.size();
    while (left && b < e && s[b] == '\n') b++;
    while (right && e > b && s[e - 1] == '\n') e--;
    return s.substr(b, e - b);
}

inline bool str_starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
inline bool str_ends_with(const std::string& s, const std::string& p) {
    return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Qwen3's split of an assistant message into (reasoning, answer), as its template does it:
// answer = after the last "</think>", without leading newlines; reasoning = before the first "</think>",
// after the last "<think>" there, without surrounding newlines. No "</think>": all answer.
inline std::pair<std::string, std::string> split_reasoning(const std::string& content) {
    size_t close = content.find("</think>");
    if (close == std::string::npos) return {"", content};
    std::string answer = strip_newlines(content.substr(content.rfind("</think>") + 8), true, false);
    std::string before = strip_newlines(content.substr(0, close), false, true);
    size_t open = before.rfind("<think>");
    if (open != std::string::npos) before = before.substr(open + 7);
    return {strip_newlines(before, true, false), answer};
}

// The system turn's tool section of Qwen2.5 and Qwen3 (after the system prompt and a blank line, if any).
inline void add_tools(ChatPieces& p, const std::vector<std::string>& tools) {
    p.add_markup("# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided "
                 "with function signatures within <tools></tools> XML tags:\n<tools>");
    for (const std::string& t : tools) {
        p.add_markup("\n");
        p.add_text(python_json(t));
    }
    p.add_markup("\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
                 "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
                 "<args-json-object>}\n</tool_call><|im_end|>\n");
}

// One call as the templates write it: <tool_call>\n{"name": "NAME", "arguments": {json}}\n</tool_call>
inline void add_tool_call(ChatPieces& p, const ToolCall& c) {
    p.add_markup("<tool_call>\n{\"name\": \"");
    p.add_text(c.name);
    p.add_markup("\", \"arguments\": ");
    p.add_text(python_json(c.arguments));
    p.add_markup("}\n</tool_call>");
}

// Renders msgs as the checkpoint's chat template does, keeping track of which bytes are template markup.
inline ChatPieces chat_pieces(const ChatInfo& chat, const std::vector<Message>& msgs, const ChatOptions& o) {
    bool any_calls = false;
    for (const Message& m : msgs) any_calls = any_calls || !m.tool_calls.empty();
    if ((!o.tools.empty() || any_calls) && !chat.tools)
        fail("the chat template of %s has no tool calling (Qwen2.5's and Qwen3's have)", chat.model_name.c_str());
    ChatPieces p;
    auto turn = [&](const std::string& role, const std::string& content) {
        p.add_markup("<|im_start|>");
        p.add_text(role);
        p.add_markup("\n");
        p.add_text(content);
        p.add_markup("<|im_end|>\n");
    };
    const bool has_system = !msgs.empty() && msgs[0].role == "system";
    const bool default_system = chat.has_default_system && o.use_default_system && !has_system && !msgs.empty();
    if (!o.tools.empty()) {  // the system prompt (the model's default if none is given) and the tools, one turn
        p.add_markup("<|im_start|>system\n");
        if (has_system || default_system) {
            p.add_text(has_system ? msgs[0].content : chat.default_system);
            p.add_markup("\n\n");
        }
        add_tools(p, o.tools);
    } else if (default_system) {
        turn("system", chat.default_system);
    }

    // Qwen3: the last user message that is not a wrapped tool response (its reasoning rule pivots on it).
    long last_query = long(msgs.size()) - 1;
    for (long i = long(msgs.size()) - 1; i >= 0; i--) {
        const Message& m = msgs[size_t(i)];
        if (m.role == "user" &&
            !(str_starts_with(m.content, "<tool_response>") && str_ends_with(m.content, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }
    for (size_t i = 0; i < msgs.size(); i++) {
        const Message& m = msgs[i];
        if (i == 0 && has_system && !o.tools.empty()) continue;  // written with the tools
        if (m.role == "tool") {
            if (i == 0 || msgs[i - 1].role != "tool") p.add_markup("<|im_start|>user");
            p.add_markup("\n<tool_response>\n");
            p.add_text(m.content);
            p.add_markup("\n</tool_response>");
            if (i + 1 == msgs.size() || msgs[i + 1].role != "tool") p.add_markup("<|im_end|>\n");
        } else if (m.role == "assistant" && chat.thinking) {
            auto [reasoning, answer] =
                m.reasoning ? std::make_pair(*m.reasoning, m.content) : split_reasoning(m.content);
            bool last = i + 1 == msgs.size();
            p.add_markup("<|im_start|>");
            p.add_text(m.role);
            p.add_markup("\n");
            if (long(i) > last_query && (last || !reasoning.empty())) {
                p.add_markup("<think>\n");
                p.add_text(strip_newlines(reasoning, true, true));
                p.add_markup("\n</think>\n\n");
                p.add_text(strip_newlines(answer, true, false));
            } else {
                p.add_text(answer);
            }
            for (size_t k = 0; k < m.tool_calls.size(); k++) {  // Qwen3: a line break before each but a first one
                if (k > 0 || !answer.empty()) p.add_markup("\n");  // that follows no content
                add_tool_call(p, m.tool_calls[k]);
            }
            p.add_markup("<|im_end|>\n");
        } else if (m.role == "assistant" && !m.tool_calls.empty()) {  // Qwen2.5: no line break before no content
            p.add_markup("<|im_start|>");
            p.add_text(m.role);
            if (!m.content.empty()) {
                p.add_markup("\n");
                p.add_text(m.content);
            }
            for (const ToolCall& c : m.tool_calls) {
                p.add_markup("\n");
                add_tool_call(p, c);
            }
            p.add_markup("<|im_end|>\n");
        } else {
            turn(m.role, m.content);
        }
    }
    if (o.add_generation_prompt) {
        p.add_markup("<|im_start|>assistant\n");
        if (chat.thinking && !o.enable_thinking) p.add_markup("<think>\n\n</think>\n\n");
    }
    return p;
}

inline std::string chat_text(const ChatInfo& chat, const std::vector<Message>& msgs, const ChatOptions& o = {}) {
    return chat_pieces(chat, msgs, o).text;
}

// The prompt's ids: the template's markers become special tokens, while a special token written inside a
// role or content stays plain text, so a user cannot forge "<|im_end|>" and start a turn of their own.
inline std::vector<int> chat_tokens(const Tokenizer& tok, const ChatInfo& chat, const std::vector<Message>& msgs,
                                    const ChatOptions& o = {}) {
    for (size_t i = 0; i < msgs.size(); i++) {
        size_t bad = utf8_first_invalid(msgs[i].role);
        if (bad != msgs[i].role.size()) fail("message %zu: role: invalid UTF-8 at byte %zu", i, bad);
        bad = utf8_first_invalid(msgs[i].content);
        if (bad != msgs[i].content.size())
            fail("message %zu (%s): invalid UTF-8 at byte %zu", i, msgs[i].role.c_str(), bad);
        const std::string& r = msgs[i].reasoning ? *msgs[i].reasoning : std::string();
        if ((bad = utf8_first_invalid(r)) != r.size())
            fail("message %zu: reasoning: invalid UTF-8 at byte %zu", i, bad);
        for (const ToolCall& c : msgs[i].tool_calls)
            if ((bad = utf8_first_invalid(c.name)) != c.name.size())
                fail("message %zu: tool call name: invalid UTF-8 at byte %zu", i, bad);
    }
    ChatPieces p = chat_pieces(chat, msgs, o);
    return tok.encode_trusted(p.text, p.markup);
}

// ============================================================================
// Sampler: penalties, temperature, top-k / top-p / min-p, and a seeded draw
// ============================================================================
// The next token is chosen from the (n_vocab) fp32 logits in this order (that of Hugging Face generate()):
//   0. logprobs (optional) log-softmax of the logits as the model gave them, before anything below: recorded for
//                          the chosen token and the `logprobs` most probable ones (what OpenAI's API returns)
//   1. logit bias          l += bias for each (id, bias) of logit_bias (OpenAI / vLLM)
//   2. repetition penalty  (HF RepetitionPenaltyLogitsProcessor) over every distinct token of the context,
//                          prompt included (or of its last repeat_last_n tokens): l = l < 0 ? l * penalty : l / penalty
//   3. presence and        (OpenAI / vLLM) over every distinct *generated* token, c times in the answer so far:
//      frequency penalty   l -= c * frequency_penalty + presence_penalty
//   3b. mask (optional)    l = -inf for every token outside the `allowed` bit set (structured output: the grammar's
//                          choice). After the penalties, whose clamp to the finite floats must not revive a token
//   4. temperature         0 => argmax (lowest id on ties), done. Otherwise p = softmax(l / temperature)
//   5. top-k               keep the k most probable tokens (and any tied with the k-th)
//   6. top-p               of those, keep the smallest most-probable set whose mass >= top_p of theirs
//   7. min-p               of those, keep the tokens with p >= min_p * p_max
//   8. draw                renormalise the kept probabilities and draw one with Rng::uniform()
// Every filter keeps at least the most probable token. Nothing sorts the whole vocabulary: top-k selects
// with nth_element, and top-p / min-p sort only the tokens above a probability cutoff (see Sampler::keep).

constexpr int MAX_TOP_LOGPROBS = 20;  // OpenAI's limit for top_logprobs

struct SamplingParams {
    float temperature = 0.7f;         // 0 = greedy (argmax)
    float top_p = 0.8f;               // (0, 1]; 1 = off
    int top_k = 20;                   // 0 = off
    float min_p = 0.0f;               // [0, 1]; 0 = off
    float repetition_penalty = 1.0f;  // > 0; 1 = off. HF semantics, over prompt + generated tokens
    int repeat_last_n = -1;           // the repetition penalty's window: the last N context tokens; -1 = all, 0 = none
    float presence_penalty = 0.0f;    // [-2, 2]; 0 = off. OpenAI/vLLM semantics, over generated tokens only
    float frequency_penalty = 0.0f;   // [-2, 2]; 0 = off. OpenAI: times each generated token's count
    std::vector<std::pair<int, float>> logit_bias;  // (n) (token id, bias in [-100, 100]), distinct ids
    int logprobs = -1;                // -1 = off; 0..MAX_TOP_LOGPROBS: record log-probabilities (Sampler::logprobs)
    uint64_t seed = 0;
};

// The checkpoint's generation-config values where it gives them (NaN / -1 = not given), else the defaults above.
inline SamplingParams default_sampling(const ChatInfo& chat) {
    SamplingParams p;
    if (!std::isnan(chat.temperature)) p.temperature = chat.temperature;
    if (!std::isnan(chat.top_p)) p.top_p = chat.top_p;
    if (chat.top_k >= 0) p.top_k = chat.top_k;
    if (!std::isnan(chat.repetition_penalty)) p.repetition_penalty = chat.repetition_penalty;
    return p;
}

// Rejects out-of-range values. Comparisons are written so that NaN fails them too.
inline void validate(const SamplingParams& p) {
    if (!(p.temperature >= 0) || std::isinf(p.temperature))
        fail("temperature must be a finite number >= 0, got %g", double(p.temperature));
    if (!(p.top_p > 0 && p.top_p <= 1)) fail("top_p must be in (0, 1], got %g", double(p.top_p));
    if (p.top_k < 0) fail("top_k must be >= 0 (0 = off), got %d", p.top_k);
    if (!(p.min_p >= 0 && p.min_p <= 1)) fail("min_p must be in [0, 1], got %g", double(p.min_p));
    if (!(p.repetition_penalty > 0) || std::isinf(p.repetition_penalty))
        fail("repetition_penalty must be a finite number > 0, got %g", double(p.repetition_penalty));
    if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2))
        fail("presence_penalty must be in [-2, 2], got %g", double(p.presence_penalty));
    if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2))
        fail("frequency_penalty must be in [-2, 2], got %g", double(p.frequency_penalty));
    if (p.repeat_last_n < -1) fail("repeat_last_n must be >= -1 (-1 = the whole context), got %d", p.repeat_last_n);
    std::vector<int> ids;
    for (const auto& [id, bias] : p.logit_bias) {
        if (id < 0) fail("logit_bias: token id %d is negative", id);
        if (!(bias >= -100 && bias <= 100))
            fail("logit_bias: the bias of token %d must be in [-100, 100], got %g", id, double(bias));
        ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
    auto twice = std::adjacent_find(ids.begin(), ids.end());
    if (twice != ids.end()) fail("logit_bias: token %d is given twice", *twice);
    if (p.logprobs < -1 || p.logprobs > MAX_TOP_LOGPROBS)
        fail("logprobs must be in [0, %d] (-1 = off), got %d", MAX_TOP_LOGPROBS, p.logprobs);
}

// xorshift64* (Vigna, 2014): 64 bits of state, the high 32 bits of each output are of good quality.
// The seed goes through one splitmix64 step so that small or zero seeds still give a well-mixed, non-zero state.
struct Rng {
    uint64_t state;

    explicit Rng(uint64_t seed) {
        uint64_t z = mix64(seed + 0x9E3779B97F4A7C15ull);
        state = z ? z : 0x9E3779B97F4A7C15ull;  // xorshift must not start at 0
    }
    uint32_t next_u32() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return uint32_t((state * 0x2545F4914F6CDD1Dull) >> 32);
    }
    // Uniform in [0, 1): the top 24 bits, exactly representable as a float.
    float uniform() { return float(next_u32() >> 8) * (1.0f / 16777216.0f); }
};

// The distinct ids of tokens[begin..] that lie in [0, n_vocab), sorted.
inline std::vector<int> distinct_tokens(const std::vector<int>& tokens, size_t begin, int n_vocab) {
    std::vector<int> ids;
    for (size_t i = begin; i < tokens.size(); i++)
        if (tokens[i] >= 0 && tokens[i] < n_vocab) ids.push_back(tokens[i]);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
}

// l += bias for each (id, bias) with id < n_vocab, clamped to the finite floats.
inline void apply_logit_bias(float* logits, int n_vocab, const std::vector<std::pair<int, float>>& bias) {
    const float max = std::numeric_limits<float>::max();
    for (const auto& [id, b] : bias)
        if (id >= 0 && id < n_vocab) logits[id] = std::max(-max, std::min(max, logits[id] + b));
}

// Where the repetition penalty's window of the last `last_n` of n_tokens context tokens begins (n_tokens: none).
inline size_t repeat_window_begin(size_t n_tokens, int last_n) {
    if (last_n < 0) return 0;
    return n_tokens - std::min(n_tokens, size_t(last_n));
}

// HF RepetitionPenaltyLogitsProcessor: each distinct context token of tokens[begin..] once; dividing a positive
// logit and multiplying a negative one both make the token less likely when penalty > 1.
inline void apply_repetition_penalty(float* logits, int n_vocab, const std::vector<int>& tokens, float penalty,
                                     size_t begin = 0) {
    if (penalty == 1.0f) return;
    const float max = std::numeric_limits<float>::max();  // an extreme penalty must not make a logit infinite
    for (int id : distinct_tokens(tokens, begin, n_vocab)) {
        float l = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty;
        logits[id] = std::max(-max, std::min(max, l));
    }
}

// What the presence and frequency penalties subtract: (id, c * frequency + presence) for each distinct token id
// that occurs c > 0 times in tokens[n_prompt..], sorted by id.
inline std::vector<std::pair<int, float>> openai_penalties(const std::vector<int>& tokens, size_t n_prompt,
                                                           int n_vocab, float presence, float frequency) {
    std::vector<std::pair<int, float>> out;
    if (presence == 0.0f && frequency == 0.0f) return out;
    std::vector<int> gen;
    for (size_t i = n_prompt; i < tokens.size(); i++)
        if (tokens[i] >= 0 && tokens[i] < n_vocab) gen.push_back(tokens[i]);
    std::sort(gen.begin(), gen.end());
    for (size_t i = 0; i < gen.size();) {
        size_t j = i;
        while (j < gen.size() && gen[j] == gen[i]) j++;
        out.push_back({gen[i], float(j - i) * frequency + presence});
        i = j;
    }
    return out;
}

// OpenAI / vLLM presence and frequency penalties: l -= c * frequency + presence for each token generated c > 0 times.
inline void apply_presence_penalty(float* logits, int n_vocab, const std::vector<int>& tokens, size_t n_prompt,
                                   float presence, float frequency = 0.0f) {
    for (const auto& [id, v] : openai_penalties(tokens, n_prompt, n_vocab, presence, frequency)) logits[id] -= v;
}

// l[i] = -inf for each token i whose bit in `allowed` (bit i % 32 of word i / 32) is clear.
inline void apply_token_mask(float* logits, int n_vocab, const uint32_t* allowed) {
    for (int i = 0; i < n_vocab; i++)
        if (!((allowed[i >> 5] >> (i & 31)) & 1u)) logits[i] = -std::numeric_limits<float>::infinity();
}

// Index of the largest logit; the lowest such index on ties.
inline int argmax(const float* logits, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

// The log-probability of a token and of the most probable ones, from the model's logits.
struct TokenLogprob {
    int id = -1;
    float logprob = 0;  // log softmax(logits)[id], <= 0
};
struct StepLogprobs {
    TokenLogprob chosen;             // the token sampled
    std::vector<TokenLogprob> top;   // (<= MAX_TOP_LOGPROBS) most probable first, lowest id first on ties
};

// log p_i = l_i - (m + log sum_j exp(l_j - m)), m = max_j l_j (sum in double); top_n of them, most probable first.
inline StepLogprobs token_logprobs(const float* logits, int n, int chosen, int top_n) {
    float m = logits[argmax(logits, n)];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += std::exp(logits[i] - m);
    const double lse = double(m) + std::log(sum);
    StepLogprobs out;
    out.chosen = {chosen, float(double(logits[chosen]) - lse)};
    std::vector<int> ids(static_cast<size_t>(n));
    for (int i = 0; i < n; i++) ids[size_t(i)] = i;
    size_t k = size_t(std::min(std::max(top_n, 0), n));
    std::partial_sort(ids.begin(), ids.begin() + long(k), ids.end(),
                      [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    for (size_t i = 0; i < k; i++) out.top.push_back({ids[i], float(double(logits[ids[i]]) - lse)});
    return out;
}

// Owns the parameters, the random state and the scratch buffers: one Sampler per generation stream.
struct Sampler {
    struct Candidate {
        int id;
        float p;  // probability after temperature, before renormalisation over the kept set
    };

    SamplingParams params;
    Rng rng;

    explicit Sampler(const SamplingParams& p) : params(p), rng(p.seed) { validate(p); }

    StepLogprobs logprobs;  // with params.logprobs >= 0: those of the last token sampled

    // logits: (n_vocab) fp32, modified in place (penalties, mask). tokens: the whole context so far (prompt, then
    // generated); tokens[n_prompt..] are the generated ones. allowed: null, or a bit set of (n_vocab + 31) / 32
    // words: only the tokens whose bit is set may be chosen. Returns the chosen id.
    int sample(float* logits, int n_vocab, const std::vector<int>& tokens, size_t n_prompt,
               const uint32_t* allowed = nullptr) {
        if (n_vocab <= 0) fail("sampler: vocabulary size must be positive, got %d", n_vocab);
        if (params.logprobs >= 0) raw_.assign(logits, logits + n_vocab);
        apply_logit_bias(logits, n_vocab, params.logit_bias);
        if (params.repeat_last_n != 0)
            apply_repetition_penalty(logits, n_vocab, tokens, params.repetition_penalty,
                                     repeat_window_begin(tokens.size(), params.repeat_last_n));
        apply_presence_penalty(logits, n_vocab, tokens, n_prompt, params.presence_penalty, params.frequency_penalty);
        if (allowed) apply_token_mask(logits, n_vocab, allowed);
        check_finite_(logits, n_vocab);
        int id = params.temperature == 0.0f ? argmax(logits, n_vocab) : draw(keep(logits, n_vocab));
        if (params.logprobs >= 0) logprobs = token_logprobs(raw_.data(), n_vocab, id, params.logprobs);
        return id;
    }

    // Steps 3-6 above for temperature > 0: the tokens that may be drawn, each with its softmax(logits / temperature)
    // probability; most probable first, or in id order when no filter is on. Valid until the next call.
    const std::vector<Candidate>& keep(const float* logits, int n_vocab) {
        softmax_(logits, n_vocab);
        cand_.clear();
        bool top_k_on = params.top_k > 0 && params.top_k < n_vocab;
        if (top_k_on) {
            keep_top_k_();
            keep_top_p_(mass_(cand_));
        } else if (params.top_p < 1.0f || params.min_p > 0.0f) {
            keep_above_cutoff_();
            keep_top_p_(1.0);
        } else {  // nothing to filter: every token, in id order
            for (int i = 0; i < n_vocab; i++) cand_.push_back({i, prob_[i]});
            return cand_;
        }
        keep_min_p_();
        return cand_;
    }

    // Draws one of the kept tokens with probability proportional to its p.
    int draw(const std::vector<Candidate>& kept) {
        if (kept.empty()) fail("sampler: no token left to draw from");
        double u = double(rng.uniform()) * mass_(kept), acc = 0;
        for (const Candidate& c : kept) {
            acc += c.p;
            if (u < acc) return c.id;
        }
        return kept.back().id;  // u landed in the rounding slack at the end
    }

  private:
    std::vector<float> raw_;       // (n_vocab) fp32: the logits as given, when logprobs are recorded
    std::vector<float> prob_;      // (n_vocab) fp32: softmax(logits / temperature)
    std::vector<Candidate> cand_;  // (<= n_vocab) the kept tokens, most probable first once filtered

    static double mass_(const std::vector<Candidate>& c) {
        double m = 0;
        for (const Candidate& x : c) m += x.p;
        return m;
    }
    // A NaN or +inf logit (a broken weights file) would turn every probability into NaN, and all -inf leaves
    // nothing to choose: refuse both rather than return an arbitrary token.
    static void check_finite_(const float* logits, int n) {
        bool any_finite = false;
        for (int i = 0; i < n; i++) {
            if (std::isnan(logits[i]) || logits[i] == std::numeric_limits<float>::infinity())
                fail("sampler: the model produced a non-finite logit (%g for token %d)", double(logits[i]), i);
            any_finite |= std::isfinite(logits[i]);
        }
        if (!any_finite) fail("sampler: every logit is -inf");
    }
    static bool more_probable(const Candidate& a, const Candidate& b) {
        return a.p > b.p || (a.p == b.p && a.id < b.id);
    }

    // p_i = exp((l_i - l_max) / T) / sum_j exp((l_j - l_max) / T)
    void softmax_(const float* logits, int n) {
        prob_.resize(size_t(n));
        float max = logits[argmax(logits, n)];
        double sum = 0;
        for (int i = 0; i < n; i++) {
            prob_[size_t(i)] = std::exp((logits[i] - max) / params.temperature);
            sum += prob_[size_t(i)];
        }
        float inv_sum = float(1.0 / sum);
        for (float& p : prob_) p *= inv_sum;
    }

    // Top-k: the k-th largest probability is found with nth_element (linear time); every token at least that
    // probable is kept, so tokens tied with the k-th all stay (as HF's TopKLogitsWarper does).
    void keep_top_k_() {
        int k = params.top_k;
        std::vector<float> tmp(prob_);
        std::nth_element(tmp.begin(), tmp.begin() + (k - 1), tmp.end(), std::greater<float>());
        float kth = tmp[size_t(k - 1)];
        for (size_t i = 0; i < prob_.size(); i++)
            if (prob_[i] >= kth) cand_.push_back({int(i), prob_[i]});
        std::sort(cand_.begin(), cand_.end(), more_probable);
    }

    // Without top-k, collects (most probable first) only the tokens with p >= cutoff, lowering the cutoff until
    // they hold the top-p mass. Any token below the cutoff is less probable than all those above it, so the
    // top-p prefix found among them is the true one. With min-p, tokens below min_p * p_max are dropped at the
    // end anyway, so that cutoff suffices at once. The loop ends by cutoff 0, which takes every token.
    void keep_above_cutoff_() {
        float p_max = *std::max_element(prob_.begin(), prob_.end());
        float cutoff = params.min_p > 0.0f ? params.min_p * p_max : p_max / 1024.0f;
        for (;;) {
            cand_.clear();
            double mass = 0;
            for (size_t i = 0; i < prob_.size(); i++)
                if (prob_[i] >= cutoff) {
                    cand_.push_back({int(i), prob_[i]});
                    mass += prob_[i];
                }
            if (params.min_p > 0.0f || mass >= params.top_p || cutoff == 0.0f) break;
            cutoff = cutoff > 1e-30f ? cutoff / 1024.0f : 0.0f;
        }
        std::sort(cand_.begin(), cand_.end(), more_probable);
    }

    // Top-p (HF TopPLogitsWarper): keep a token while the mass of the more probable tokens before it is below
    // top_p times the total mass still in play: that of the top-k set (HF renormalises after top-k), else 1.
    void keep_top_p_(double total) {
        if (params.top_p >= 1.0f) return;
        double limit = double(params.top_p) * total, before = 0;
        size_t n = 0;
        while (n < cand_.size() && (n == 0 || before < limit)) before += cand_[n++].p;
        cand_.resize(n);
    }

    // Min-p: keep tokens with p >= min_p * p_max (the ratio is the same before and after renormalising).
    void keep_min_p_() {
        if (params.min_p <= 0.0f) return;
        float threshold = params.min_p * cand_[0].p;
        size_t n = 1;
        while (n < cand_.size() && cand_[n].p >= threshold) n++;
        cand_.resize(n);
    }
};

// ============================================================================
// Engine: the interface the CPU reference and the GPU engine both implement
// ============================================================================

// The KV cache is a pool of blocks of KV_BLOCK token rows each (every layer's keys and values of those tokens). A
// sequence owns a block table: the cache rows of its position p are row p % KV_BLOCK of block table[p / KV_BLOCK].
// Many sequences share one pool, so a batched step can run them together (see Scheduler), and two sequences
// with the same beginning can share the blocks that hold it (prefix caching).
constexpr int KV_BLOCK = 16;  // tokens per KV-cache block

inline int kv_blocks_for(int tokens) { return (tokens + KV_BLOCK - 1) / KV_BLOCK; }  // blocks that hold `tokens`

// The pool row (block * KV_BLOCK + row in the block) of position p of the sequence with block table `blocks`.
inline size_t kv_pool_row(const int* blocks, int p) { return size_t(blocks[p / KV_BLOCK]) * KV_BLOCK + p % KV_BLOCK; }

// Bytes of one block: keys and values of KV_BLOCK tokens in every layer, value_bytes each (4 on the CPU, 2 on the GPU).
inline size_t kv_block_bytes(const Config& c, int value_bytes) {
    return 2 * size_t(c.n_layers) * KV_BLOCK * size_t(c.kv_dim()) * size_t(value_bytes);
}

// One sequence's part of a batched step: tokens[0..n) at positions pos..pos+n-1 (a prompt chunk, or n = 1: a
// decode token). They attend over positions 0..pos+n-1 of this sequence, whose cache rows the block table gives.
struct SeqStep {
    const int* tokens = nullptr;  // (n) token ids
    int n = 0;
    int pos = 0;                  // position of tokens[0]; rows 0..pos-1 are in the cache already
    const int* blocks = nullptr;  // (kv_blocks_for(pos + n)) block ids of positions 0..pos+n-1
    bool want_logits = true;      // the next-token logits after tokens[n-1] are wanted (a prompt's last chunk,
                                  // a decode token); a step computes them only for the sequences that want them
};

// One model instance with its KV-cache pool. Positions are absolute: a step writes the cache rows of its tokens'
// positions and attends over rows 0..pos+n-1, so a caller can rewind a sequence to any pos and continue.
struct Engine {
    virtual ~Engine() = default;
    virtual const Config& config() const = 0;
    virtual int context_size() const = 0;  // the longest sequence, in tokens
    virtual int kv_blocks() const = 0;     // blocks in the KV pool (at least kv_blocks_for(context_size()))
    virtual const char* name() const = 0;  // "cpu" or "cuda"

    // The batched step: runs every sequence's tokens; afterwards logits(i) are the next-token logits of batch[i]
    // (for those that want them). The one place where a step's arguments are checked: tokens in the vocabulary,
    // positions within the context, block ids within the pool, and no block written by two sequences.
    void step(const std::vector<SeqStep>& batch) {
        const int ctx = context_size(), vocab = config().vocab_size, pool = kv_blocks();
        if (batch.empty()) fail("step: the batch is empty");
        std::vector<std::pair<int, int>> written;  // (block, sequence) of every block a sequence writes
        for (size_t s = 0; s < batch.size(); s++) {
            const SeqStep& q = batch[s];
            if (q.n < 1 || !q.tokens) fail("forward: need at least one token, got n = %d", q.n);
            if (q.pos < 0) fail("forward: position must be >= 0, got %d", q.pos);
            if (q.n > ctx || q.pos > ctx - q.n)
                fail("forward: positions %d..%d exceed the context size %d", q.pos, q.pos + q.n - 1, ctx);
            for (int i = 0; i < q.n; i++)
                if (q.tokens[i] < 0 || q.tokens[i] >= vocab)
                    fail("forward: token id %d at index %d is outside the vocabulary [0, %d)", q.tokens[i], i, vocab);
            if (!q.blocks) fail("step: sequence %zu has no block table", s);
            for (int b = 0; b < kv_blocks_for(q.pos + q.n); b++) {
                int id = q.blocks[b];
                if (id < 0 || id >= pool) fail("step: block id %d is outside the pool of %d blocks", id, pool);
                if (b >= q.pos / KV_BLOCK) written.push_back({id, int(s)});  // the blocks before are only read
            }
        }
        std::sort(written.begin(), written.end());
        for (size_t i = 1; i < written.size(); i++)
            if (written[i].first == written[i - 1].first && written[i].second != written[i - 1].second)
                fail("step: block %d is written by sequences %d and %d", written[i].first, written[i - 1].second,
                     written[i].second);
        step_checked(batch);
    }

    // The single-sequence path: tokens[0..n) at positions pos..pos+n-1 (n > 1 is a prefill) in the pool's first
    // blocks, in order; afterwards logits() are the next-token logits after the last of them. It is the batched
    // step with one sequence whose block table is 0, 1, 2, ...
    void forward(const int* tokens, int n, int pos) {
        if (n < 1 || !tokens) fail("forward: need at least one token, got n = %d", n);
        if (identity_.empty())
            for (int b = 0; b < kv_blocks_for(context_size()); b++) identity_.push_back(b);
        SeqStep s;
        s.tokens = tokens, s.n = n, s.pos = pos, s.blocks = identity_.data();
        step({s});
    }
    virtual const float* logits(int i = 0) = 0;  // (vocab_size) fp32, host memory: batch[i]'s of the last step
    // Chooses batch[i]'s next token from its logits of the last step; the GPU engine overrides this to sample on
    // the device. allowed: null, or the bit set of the tokens that may be chosen (see Sampler::sample).
    virtual int sample(Sampler& s, int n_vocab, const std::vector<int>& tokens, size_t n_prompt,
                       const uint32_t* allowed = nullptr, int i = 0) {
        std::vector<float>& buf = scratch_logits_;
        buf.assign(logits(i), logits(i) + n_vocab);
        return s.sample(buf.data(), n_vocab, tokens, n_prompt, allowed);
    }

  protected:
    virtual void step_checked(const std::vector<SeqStep>& batch) = 0;  // step() after its checks

  private:
    std::vector<float> scratch_logits_;  // (n_vocab) fp32: a copy, since the sampler edits logits in place
    std::vector<int> identity_;          // (kv_blocks_for(context)) 0, 1, 2, ...: forward()'s block table
};

// What every engine's constructor checks: weights present, a known architecture, a context the model allows.
inline void check_engine_model(const Model& m, int context_size) {
    const Config& c = m.config;
    if (!m.has_weights) fail("%s: the file has no weights (tokenizer only)", m.file.path.c_str());
    if (c.arch != ARCH_QWEN2 && c.arch != ARCH_QWEN3) fail("unsupported arch %d", c.arch);
    if (context_size < 1 || context_size > c.max_seq_len)
        fail("context size must be in [1, %d] (the model's max_seq_len), got %d", c.max_seq_len, context_size);
}

// RoPE's inverse frequencies inv_freq_i = theta^(-2i / head_dim), i < head_dim / 2: computed in double and
// rounded once to fp32, as HF computes them in fp32 from an fp32 exponent (never through bf16, which would
// move every angle). Both engines take them from here.
inline std::vector<float> rope_inv_freq(const Config& c) {
    std::vector<float> f(size_t(c.head_dim / 2));
    for (size_t i = 0; i < f.size(); i++) f[i] = float(1.0 / std::pow(c.rope_theta, 2.0 * double(i) / c.head_dim));
    return f;
}

// ============================================================================
// CPU reference: a thread pool and the fp32 forward pass over the weights (bf16 or quantized)
// ============================================================================
// This is the specification the GPU engine is tested against. Weights stay in the mapped file in their storage
// type and are widened (bf16) or decoded (quantized blocks) to fp32 as they are read; every activation, the KV
// cache and every sum are fp32, as in Hugging Face transformers running a bf16 checkpoint loaded in fp32
// (activations are never rounded to bf16).
//
// One decoder layer (Qwen2 family: Qwen1.5, Qwen2, Qwen2.5; and Qwen3), for each token at position p:
//   h       = rmsnorm(x) * attn_norm
//   q, k, v = h @ Wq^T (+bq), h @ Wk^T (+bk), h @ Wv^T (+bv)    one matmul over the three matrices
//   q, k    = rmsnorm(q_head) * q_norm, rmsnorm(k_head) * k_norm  per head, Qwen3 only
//   q, k    = rope(q, p), rope(k, p);  cache[p] = (k, v)
//   a       = softmax(q . K[0..p] / sqrt(head_dim)) @ V[0..p]     per head; GQA: groups of n_heads / n_kv_heads
//                                                                 query heads share one kv head
//   x       = x + a @ Wo^T
//   h       = rmsnorm(x) * ffn_norm
//   x       = x + (silu(h @ Wgate^T) * (h @ Wup^T)) @ Wdown^T
// and after the last layer: logits = (rmsnorm(x) * out_norm) @ lm_head^T.

// ----------------------------------------------------------------------------
// ThreadPool: persistent workers that split a range of rows between them
// ----------------------------------------------------------------------------

// parallel_for(n, fn) runs fn(begin, end) on size() contiguous chunks covering [0, n): chunk 0 on the calling
// thread, the others on the workers, and returns when all are done. One caller at a time; fn must not throw.
// `work`, if given, is the job's size in multiply-adds: a job under kMinWork runs as one chunk on the calling
// thread, since waking the workers and waiting for them would cost more than they save (more so when other
// programs keep the cores busy and a worker waits to be scheduled).
struct ThreadPool {
    explicit ThreadPool(int n_threads = 0) {
        n_threads_ = n_threads > 0 ? n_threads : int(std::thread::hardware_concurrency());
        n_threads_ = std::max(n_threads_, 1);
        for (int i = 1; i < n_threads_; i++) workers_.emplace_back([this, i] { worker_(i); });
    }
    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread& t : workers_) t.join();
    }
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }

    static constexpr double kMinWork = 1 << 18;  // multiply-adds: some 10 to 30 us of one core's time

    void parallel_for(int n, const std::function<void(int, int)>& fn, double work = kMinWork) {
        if (n <= 0) return;
        if (n_threads_ == 1 || n == 1 || work < kMinWork) return fn(0, n);
        {
            std::lock_guard<std::mutex> lock(mu_);
            job_ = &fn;
            job_n_ = n;
            pending_ = n_threads_ - 1;
            generation_++;
        }
        wake_.notify_all();
        run_chunk_(fn, n, 0);
        std::unique_lock<std::mutex> lock(mu_);
        done_.wait(lock, [&] { return pending_ == 0; });
    }

  private:
    int n_threads_ = 1;
    std::vector<std::thread> workers_;  // (n_threads - 1); the caller is thread 0
    std::mutex mu_;                     // guards everything below
    std::condition_variable wake_, done_;
    const std::function<void(int, int)>* job_ = nullptr;  // the current job, valid while pending_ > 0
    int job_n_ = 0;                     // the current job's range [0, job_n_)
    int pending_ = 0;                   // workers still running the current job
    uint64_t generation_ = 0;           // counts jobs, so a worker runs each one once
    bool stop_ = false;

    void run_chunk_(const std::function<void(int, int)>& fn, int n, int index) {
        int begin = int(int64_t(n) * index / n_threads_), end = int(int64_t(n) * (index + 1) / n_threads_);
        if (begin < end) fn(begin, end);
    }

    void worker_(int index) {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mu_);
        for (;;) {
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            const std::function<void(int, int)>& fn = *job_;
            int n = job_n_;
            lock.unlock();
            run_chunk_(fn, n, index);
            lock.lock();
            if (--pending_ == 0) done_.notify_one();
        }
    }
};

// ----------------------------------------------------------------------------
// Kernels: the fp32 building blocks of the forward pass
// ----------------------------------------------------------------------------
namespace cpu {

// Vectors of partial sums. With AVX, f32v is a GCC/Clang vector type of 8 floats: an operation on it is the same
// IEEE fp32 operation on each lane, so a loop over vectors gives exactly the bits of the scalar loop with one
// variable per lane; it only tells the compiler to keep the 8 lanes in one SIMD register. Without AVX, f32v is a
// plain float and the same code is a scalar loop over 8 lanes, which the compiler vectorises on its own.
// Either way every dot product keeps kLanes = 8 partial sums and gives the same bits.
#if defined(__AVX__)
typedef float f32v __attribute__((vector_size(32)));
typedef uint16_t u16v __attribute__((vector_size(16)));
typedef uint32_t u32v __attribute__((vector_size(32)));
// v = p[0..8), widened to fp32 (exactly, for bf16: its bits become the top half of the fp32).
inline void load(f32v& v, const float* p) { memcpy(&v, p, sizeof v); }
inline void load(f32v& v, const bf16* p) {
    u16v h;
    memcpy(&h, p, sizeof h);
    u32v u = __builtin_convertvector(h, u32v) << 16;
    memcpy(&v, &u, sizeof v);
}
#else
typedef float f32v;
inline void load(f32v& v, const float* p) { v = *p; }
inline void load(f32v& v, const bf16* p) { v = bf16_to_f32(*p); }
#endif
constexpr int kLanes = 8;                                  // partial sums per dot product
constexpr int kWidth = int(sizeof(f32v) / sizeof(float));  // lanes per f32v: 8 or 1
constexpr int kVecs = kLanes / kWidth;                     // f32v per set of partial sums: 1 or 8
// The matmul tile (see matmul), weight rows x tokens. With AVX, 4 x 8 tiles: 32 vector accumulators, which fit
// AVX-512's 32 registers (with AVX2's 16 some spill to L1, and it is still the fastest shape). Of the scalar code
// GCC vectorises the 1 x 2 tile well; larger ones it leaves scalar.
#if defined(__AVX__)
constexpr int kTileRows = 4, kTileTokens = 8;
#else
constexpr int kTileRows = 1, kTileTokens = 2;
#endif

inline float to_f32(float v) { return v; }
inline float to_f32(bf16 v) { return bf16_to_f32(v); }

// A tile of dot products: R rows of a (fp32 or bf16) against T fp32 vectors b, each of length n,
//   out[t * out_stride + r] = sum_i a[r * a_stride + i] * b[t * b_stride + i],
// each loaded row vector serving T products and each b vector R. The order of the additions is fixed (see
// matmul): lanes, then a fixed tree over the lanes, then the tail.
template <int R, int T, class A>
inline void dot_tile(float* out, size_t out_stride, const A* a, size_t a_stride, const float* b, size_t b_stride,
                     int n) {
    f32v acc[R][T][kVecs] = {};
    int i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int v = 0; v < kVecs; v++) {
            f32v av[R];
            for (int r = 0; r < R; r++) load(av[r], a + r * a_stride + i + v * kWidth);
            for (int t = 0; t < T; t++) {
                f32v bv;
                load(bv, b + t * b_stride + i + v * kWidth);
                for (int r = 0; r < R; r++) acc[r][t][v] += av[r] * bv;
            }
        }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            float s[kLanes];
            memcpy(s, acc[r][t], sizeof s);
            float sum = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
            for (int k = i; k < n; k++) sum += to_f32(a[r * a_stride + k]) * b[t * b_stride + k];
            out[t * out_stride + r] = sum;
        }
}

// sum_i a[i] * b[i], a fp32 or bf16 (widened exactly): a 1 x 1 tile.
template <class A>
inline float dot(const A* a, const float* b, int n) {
    float s;
    dot_tile<1, 1>(&s, 0, a, 0, b, 0, n);
    return s;
}

// The products of RR consecutive weight rows a (fp32 or bf16, row stride cols) with n tokens x (row stride
// cols): out[t * out_stride + i] = a_i . x_t. With `tiled`, whole tiles of kTileTokens tokens go through dot_tile
// and the tokens past the last tile one dot product at a time; without, every token one at a time.
template <int RR, class A>
inline void rows_times_tokens(float* out, size_t out_stride, const A* a, const float* x, int n, int cols, bool tiled) {
    int t = 0;
    if (tiled)
        for (; t + kTileTokens <= n; t += kTileTokens)
            dot_tile<RR, kTileTokens>(out + size_t(t) * out_stride, out_stride, a, size_t(cols), x + size_t(t) * cols,
                                      size_t(cols), cols);
    for (int i = 0; i < RR; i++)
        for (int u = t; u < n; u++) out[size_t(u) * out_stride + i] = dot(a + size_t(i) * cols, x + size_t(u) * cols, cols);
}

// Rows [r0, r1) of one weight matrix w (any storage type) times n tokens, into columns [r0, r1) of out (row
// stride out_stride). Groups of kTileRows rows run as tiles (rows_times_tokens); the rows past the last whole
// group one at a time. bf16 and fp32 rows are read in place; other types are first decoded, a group of rows at
// a time, into buf (kTileRows * cols fp32), so the sums see exactly the decoded values whatever the type.
inline void matmul_rows(float* out, size_t out_stride, const float* x, const Tensor& w, int r0, int r1, int n,
                        std::vector<float>& buf) {
    const int R = kTileRows, cols = w.cols, full = r1 - (r1 - r0) % R;  // rows r0..full: whole groups
    for (int r = r0; r < r1;) {
        const int rr = r < full ? R : 1;  // rows in this step
        float* o = out + r;
        if (w.type == DT_BF16) {
            const bf16* a = reinterpret_cast<const bf16*>(w.row(r));
            rr == R ? rows_times_tokens<R>(o, out_stride, a, x, n, cols, true)
                    : rows_times_tokens<1>(o, out_stride, a, x, n, cols, false);
        } else if (w.type == DT_F32) {
            const float* a = w.f32() + size_t(r) * cols;
            rr == R ? rows_times_tokens<R>(o, out_stride, a, x, n, cols, true)
                    : rows_times_tokens<1>(o, out_stride, a, x, n, cols, false);
        } else {
            buf.resize(size_t(R) * cols);
            for (int i = 0; i < rr; i++) dequantize_row(w, r + i, &buf[size_t(i) * cols]);
            rr == R ? rows_times_tokens<R>(o, out_stride, buf.data(), x, n, cols, true)
                    : rows_times_tokens<1>(o, out_stride, buf.data(), x, n, cols, false);
        }
        r += rr;
    }
}

// One matrix of a matmul, with its bias (fp32 vector; empty or nullptr for none).
struct MatmulPart {
    const Tensor* w;
    const Tensor* bias = nullptr;
};

// out (n, rows) = x (n, cols) @ [W_0; W_1; ...]^T (+ bias): the parts' rows one after another in each output row
// (q, k and v of a layer: one product), each W (rows_i, cols) in its own storage type.
//
// Speed: threads split the rows in groups of kTileRows, and a group runs tiles of kTileRows weight rows x
// kTileTokens tokens, so a block of tokens (prefill) reads each weight row once per kTileTokens tokens and the
// arithmetic, not the memory, sets the pace. The tokens past the last full tile (every token when decoding)
// and the rows past the last full group go one dot product at a time: one stream of weights at a time is what
// the memory serves fastest, and a decode step is bound by memory anyway. A quantized row is decoded into a
// small buffer that stays in the L1 cache, so a decode step reads each weight byte from memory once.
//
// Determinism: every output is one dot product summed in one fixed order, whatever the tile, the group, the part
// or the thread: lane j of kLanes partial sums adds the products i = j (mod 8) in order of i, the lanes are added
// in a fixed tree, then the tail i >= cols - cols % 8 in order (dot_tile). So the logits are bit-identical for any
// thread count, any prefill block size, and prefill vs decode, which the tests check. It relies on every product
// and sum being rounded on its own: a compiler allowed to fuse a * b + c into one FMA may fuse in one tile shape
// and not in another, hence -ffp-contract=off in the Makefile.
inline void matmul(ThreadPool& pool, float* out, const float* x, int n, const std::vector<MatmulPart>& parts) {
    constexpr int R = kTileRows;
    std::vector<int> first_group, first_row;  // (parts + 1) each part's first row group and first output column
    int groups = 0, rows = 0;
    for (const MatmulPart& p : parts) {
        first_group.push_back(groups), first_row.push_back(rows);
        groups += (p.w->rows + R - 1) / R, rows += p.w->rows;
    }
    first_group.push_back(groups), first_row.push_back(rows);
    pool.parallel_for(groups, [&](int g0, int g1) {
        std::vector<float> buf;  // decoded rows of a quantized matrix
        for (size_t k = 0; k < parts.size(); k++) {
            const Tensor& w = *parts[k].w;
            int a = std::max(g0, first_group[k]) - first_group[k], b = std::min(g1, first_group[k + 1]) - first_group[k];
            if (a >= b) continue;
            int r0 = a * R, r1 = std::min(w.rows, b * R);
            float* o = out + first_row[k];
            matmul_rows(o, size_t(rows), x, w, r0, r1, n, buf);
            if (parts[k].bias && *parts[k].bias) {
                const float* bias = parts[k].bias->f32();
                for (int t = 0; t < n; t++)
                    for (int q = r0; q < r1; q++) o[size_t(t) * rows + q] += bias[q];
            }
        }
    }, double(n) * rows * parts[0].w->cols);
}

// HF Qwen2RMSNorm / Qwen3RMSNorm in fp32: out = (x * rsqrt(mean(x^2) + eps)) * w. out may alias x.
inline void rmsnorm(float* out, const float* x, const float* w, int n, float eps) {
    float r = 1.0f / std::sqrt(dot(x, x, n) / float(n) + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
}

// HF's rotate_half RoPE on each of n_heads vectors of head_dim, pairing element i with i + half:
//   x'[i]        = x[i] cos(a_i) - x[i + half] sin(a_i)
//   x'[i + half] = x[i + half] cos(a_i) + x[i] sin(a_i),     a_i = p * theta^(-2i / head_dim)
// cos, sin: (half) fp32, the angles of this token's position p.
inline void rope(float* x, int n_heads, int head_dim, const float* cos, const float* sin) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float* v = x + size_t(h) * head_dim;
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cos[i] - b * sin[i];
            v[i + half] = b * cos[i] + a * sin[i];
        }
    }
}

// In-place softmax over n fp32 values (max subtracted first, so exp never overflows).
inline void softmax(float* x, int n) {
    float max = *std::max_element(x, x + n), sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = std::exp(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace cpu

// ----------------------------------------------------------------------------
// CpuEngine: the forward pass
// ----------------------------------------------------------------------------

// Keeps pointers into the model's mapped weights: the Model must outlive the engine. kv_blocks: the size of the KV
// pool in blocks (0: enough for one sequence of context_size tokens, the least it takes).
//
// A step runs the rows of all its sequences (each sequence's tokens in order, one sequence after another) in
// blocks of up to kBatch rows: each weight row is read once per block, whichever sequences the rows belong to.
// Each row keeps its own position and block table, and the matmuls give every row the same bits whatever rows
// share its block (see cpu::matmul), so a sequence's logits do not depend on what else is in the step.
struct CpuEngine : Engine {
    static constexpr int kBatch = 32;  // rows per block: each weight row is read once per block

    CpuEngine(const Model& m, int context_size, int n_threads = 0, int kv_blocks = 0)
        : cfg_(m.config), w_(m.weights), ctx_(context_size), pool_(n_threads) {
        const Config& c = cfg_;
        check_engine_model(m, context_size);
        if (kv_blocks < 0) fail("the KV pool size must be >= 0 blocks, got %d", kv_blocks);
        n_blocks_ = std::max(kv_blocks, kv_blocks_for(ctx_));
        int qkv = c.q_dim() + 2 * c.kv_dim();
        x_.resize(size_t(kBatch) * c.dim);
        xb_.resize(size_t(kBatch) * c.dim);
        xb2_.resize(size_t(kBatch) * c.dim);
        qkv_.resize(size_t(kBatch) * qkv);
        att_.resize(size_t(kBatch) * c.q_dim());
        ffn_.resize(size_t(kBatch) * 2 * c.ffn_dim);
        act_.resize(size_t(kBatch) * c.ffn_dim);
        rope_cos_.resize(size_t(kBatch) * (c.head_dim / 2));
        rope_sin_.resize(size_t(kBatch) * (c.head_dim / 2));
        rows_.resize(size_t(kBatch));
        size_t cache = size_t(c.n_layers) * pool_rows() * c.kv_dim();
        key_cache_.assign(cache, 0.0f);
        value_cache_.assign(cache, 0.0f);
        inv_freq_ = rope_inv_freq(c);
    }

    const Config& config() const override { return cfg_; }
    int context_size() const override { return ctx_; }
    int kv_blocks() const override { return n_blocks_; }
    const char* name() const override { return "cpu"; }
    const float* logits(int i = 0) override {
        if (i < 0 || size_t(i) >= logits_.size() / size_t(cfg_.vocab_size) || !has_logits_[size_t(i)])
            fail("logits: sequence %d of the last step has no logits", i);
        return &logits_[size_t(i) * cfg_.vocab_size];
    }
    int n_threads() const { return pool_.size(); }

  protected:
    void step_checked(const std::vector<SeqStep>& batch) override {
        std::vector<Row> rows;  // every token of the step: sequence after sequence
        for (size_t s = 0; s < batch.size(); s++)
            for (int t = 0; t < batch[s].n; t++) rows.push_back({int(s), batch[s].tokens[t], batch[s].pos + t});
        logits_.resize(batch.size() * size_t(cfg_.vocab_size));  // rows are written before has_logits_ is set
        has_logits_.assign(batch.size(), false);
        for (size_t done = 0; done < rows.size(); done += kBatch) {
            int n = int(std::min(rows.size() - done, size_t(kBatch)));
            std::copy(rows.begin() + long(done), rows.begin() + long(done) + n, rows_.begin());
            forward_block_(batch, n);
            output_(batch, n);
        }
    }

  private:
    Config cfg_;
    Weights w_;  // views into the mapped file (see Weights for the shapes and types)
    int ctx_;
    int n_blocks_ = 0;  // blocks in the KV pool
    ThreadPool pool_;

    struct Row {  // one token of a step
        int seq;    // its sequence: an index into the step's batch
        int token;  // its id
        int pos;    // its position in its sequence
    };

    // Activations of one block of up to kBatch rows, row r = rows_[r].
    std::vector<Row> rows_;        // (kBatch) the rows of the block
    std::vector<float> x_;         // (kBatch, dim) fp32: the residual stream
    std::vector<float> xb_;        // (kBatch, dim) fp32: normed input of attention / MLP
    std::vector<float> xb2_;       // (kBatch, dim) fp32: output of attention / MLP before the residual add
    std::vector<float> qkv_;       // (kBatch, q_dim + 2*kv_dim) fp32: q, then k, then v of each row
    std::vector<float> att_;       // (kBatch, q_dim) fp32: attention output, heads concatenated
    std::vector<float> ffn_;       // (kBatch, 2*ffn_dim) fp32: gate, then up
    std::vector<float> act_;       // (kBatch, ffn_dim) fp32: silu(gate) * up
    std::vector<float> rope_cos_;  // (kBatch, head_dim/2) fp32: cos of each row's rotation angles
    std::vector<float> rope_sin_;  // (kBatch, head_dim/2) fp32
    std::vector<float> inv_freq_;  // (head_dim/2) fp32: theta^(-2i / head_dim)
    std::vector<float> out_;       // (kBatch, vocab_size) fp32: the logits of one block's last rows
    std::vector<float> logits_;    // (batch, vocab_size) fp32: each sequence's, after the last step
    std::vector<bool> has_logits_; // (batch) which sequences of the last step have logits
    // The KV pool: block b holds the pool rows b * KV_BLOCK .. b * KV_BLOCK + KV_BLOCK - 1 of every layer.
    std::vector<float> key_cache_;    // (n_layers, n_blocks * KV_BLOCK, kv_dim) fp32, after RoPE
    std::vector<float> value_cache_;  // (n_layers, n_blocks * KV_BLOCK, kv_dim) fp32

    size_t pool_rows() const { return size_t(n_blocks_) * KV_BLOCK; }

    // Runs the n rows of rows_ through every layer, leaving the residual in x_.
    void forward_block_(const std::vector<SeqStep>& batch, int n) {
        const Config& c = cfg_;
        for (int r = 0; r < n; r++) dequantize_row(w_.token_embd, rows_[size_t(r)].token, &x_[size_t(r) * c.dim]);
        rope_angles_(n);
        for (int l = 0; l < c.n_layers; l++) {
            attention_block_(batch, l, n);
            mlp_block_(l, n);
        }
    }

    // Angle a_i = p * inv_freq_i in fp32 (as HF computes it), cos and sin taken of that fp32 angle.
    void rope_angles_(int n) {
        int half = cfg_.head_dim / 2;
        for (int r = 0; r < n; r++)
            for (int i = 0; i < half; i++) {
                float a = float(rows_[size_t(r)].pos) * inv_freq_[size_t(i)];
                rope_cos_[size_t(r) * half + i] = std::cos(a);
                rope_sin_[size_t(r) * half + i] = std::sin(a);
            }
    }

    // x += attention(rmsnorm(x)) for layer l; also writes the rows' k, v into their sequences' cache rows.
    void attention_block_(const std::vector<SeqStep>& batch, int l, int n) {
        const Config& c = cfg_;
        const Layer& L = w_.layers[size_t(l)];
        int dim = c.dim, hd = c.head_dim, q_dim = c.q_dim(), kv_dim = c.kv_dim(), qkv_dim = q_dim + 2 * kv_dim;
        for (int r = 0; r < n; r++)
            cpu::rmsnorm(&xb_[size_t(r) * dim], &x_[size_t(r) * dim], L.attn_norm.f32(), dim, c.norm_eps);
        cpu::matmul(pool_, qkv_.data(), xb_.data(), n, {{&L.wq, &L.bq}, {&L.wk, &L.bk}, {&L.wv, &L.bv}});
        float* kc = &key_cache_[size_t(l) * pool_rows() * kv_dim];
        float* vc = &value_cache_[size_t(l) * pool_rows() * kv_dim];
        for (int r = 0; r < n; r++) {
            float* q = &qkv_[size_t(r) * qkv_dim];
            float* k = q + q_dim;
            float* v = k + kv_dim;
            if (c.qk_norm) {  // Qwen3: RMSNorm over each head's vector, before RoPE
                const float *qn = L.q_norm.f32(), *kn = L.k_norm.f32();
                for (int h = 0; h < c.n_heads; h++) cpu::rmsnorm(q + h * hd, q + h * hd, qn, hd, c.norm_eps);
                for (int h = 0; h < c.n_kv_heads; h++) cpu::rmsnorm(k + h * hd, k + h * hd, kn, hd, c.norm_eps);
            }
            const float* cs = &rope_cos_[size_t(r) * (hd / 2)];
            const float* sn = &rope_sin_[size_t(r) * (hd / 2)];
            cpu::rope(q, c.n_heads, hd, cs, sn);
            cpu::rope(k, c.n_kv_heads, hd, cs, sn);
            const Row& row = rows_[size_t(r)];
            size_t at = kv_pool_row(batch[size_t(row.seq)].blocks, row.pos) * kv_dim;
            std::copy(k, k + kv_dim, kc + at);
            std::copy(v, v + kv_dim, vc + at);
        }
        attend_(batch, kc, vc, n);
        cpu::matmul(pool_, xb2_.data(), att_.data(), n, {{&L.wo}});
        for (size_t i = 0; i < size_t(n) * dim; i++) x_[i] += xb2_[i];
    }

    // att_[r, head h] = softmax(q_rh . K[0..p] / sqrt(head_dim)) @ V[0..p] with p the row's position (causal),
    // where K, V are the cache rows of the row's sequence (through its block table) of kv head
    // h / (n_heads / n_kv_heads). Threads split the (row, head) pairs.
    void attend_(const std::vector<SeqStep>& batch, const float* kc, const float* vc, int n) {
        const Config& c = cfg_;
        int hd = c.head_dim, kv_dim = c.kv_dim(), qkv_dim = c.q_dim() + 2 * kv_dim;
        int group = c.n_heads / c.n_kv_heads, longest = 0;
        for (int r = 0; r < n; r++) longest = std::max(longest, rows_[size_t(r)].pos + 1);
        float scale = 1.0f / std::sqrt(float(hd));
        pool_.parallel_for(n * c.n_heads, [&](int i0, int i1) {
            std::vector<float> score(static_cast<size_t>(longest));  // (longest) fp32: attention weights of one query
            for (int i = i0; i < i1; i++) {
                int r = i / c.n_heads, h = i % c.n_heads, p = rows_[size_t(r)].pos;
                const int* blocks = batch[size_t(rows_[size_t(r)].seq)].blocks;
                const float* q = &qkv_[size_t(r) * qkv_dim + size_t(h) * hd];
                size_t off = size_t(h / group) * hd;  // this head's kv head within a cache row
                for (int j = 0; j <= p; j++)
                    score[size_t(j)] = cpu::dot(q, kc + kv_pool_row(blocks, j) * kv_dim + off, hd) * scale;
                cpu::softmax(score.data(), p + 1);
                float* out = &att_[size_t(r) * c.q_dim() + size_t(h) * hd];
                std::fill(out, out + hd, 0.0f);
                for (int j = 0; j <= p; j++) {
                    const float* v = vc + kv_pool_row(blocks, j) * kv_dim + off;
                    for (int d = 0; d < hd; d++) out[d] += score[size_t(j)] * v[d];
                }
            }
        }, 2.0 * n * c.n_heads * longest * hd);
    }

    // x += down(silu(gate(h)) * up(h)), h = rmsnorm(x), for layer l.
    void mlp_block_(int l, int n) {
        const Config& c = cfg_;
        const Layer& L = w_.layers[size_t(l)];
        int dim = c.dim, ffn = c.ffn_dim;
        for (int t = 0; t < n; t++)
            cpu::rmsnorm(&xb_[size_t(t) * dim], &x_[size_t(t) * dim], L.ffn_norm.f32(), dim, c.norm_eps);
        cpu::matmul(pool_, ffn_.data(), xb_.data(), n, {{&L.w_gate}, {&L.w_up}});
        for (int t = 0; t < n; t++) {
            const float* gate = &ffn_[size_t(t) * 2 * ffn];
            const float* up = gate + ffn;
            for (int i = 0; i < ffn; i++) act_[size_t(t) * ffn + i] = cpu::silu(gate[i]) * up[i];
        }
        cpu::matmul(pool_, xb2_.data(), act_.data(), n, {{&L.w_down}});
        for (size_t i = 0; i < size_t(n) * dim; i++) x_[i] += xb2_[i];
    }

    // A sequence's logits = rmsnorm(x[r]) * out_norm @ lm_head^T, for the rows r of the current block that are the
    // last of a sequence that wants them: one matmul over all of them, so lm_head is read once per block.
    void output_(const std::vector<SeqStep>& batch, int n) {
        const Config& c = cfg_;
        std::vector<int> seqs;  // (k) the sequences whose last row is in this block
        for (int r = 0; r < n; r++) {
            const Row& row = rows_[size_t(r)];
            const SeqStep& q = batch[size_t(row.seq)];
            if (!q.want_logits || row.pos != q.pos + q.n - 1) continue;
            cpu::rmsnorm(&xb_[seqs.size() * c.dim], &x_[size_t(r) * c.dim], w_.out_norm.f32(), c.dim, c.norm_eps);
            seqs.push_back(row.seq);
        }
        if (seqs.empty()) return;
        out_.resize(seqs.size() * size_t(c.vocab_size));
        cpu::matmul(pool_, out_.data(), xb_.data(), int(seqs.size()), {{&w_.lm_head}});  // tied: token_embd
        for (size_t k = 0; k < seqs.size(); k++) {
            std::copy(&out_[k * c.vocab_size], &out_[(k + 1) * c.vocab_size], &logits_[size_t(seqs[k]) * c.vocab_size]);
            has_logits_[size_t(seqs[k])] = true;
        }
    }
};

// ============================================================================
// Structured output: grammars (GBNF, JSON Schema, regex, choices) and the token masks that enforce them
// ============================================================================
// A Grammar is a context-free grammar over UTF-8 text, in the syntax of llama.cpp's GBNF:
//
//   root   ::= "{" ws pair ("," ws pair)* ws "}"   # rule ::= alternatives; text starts at the rule `root`
//   pair   ::= key ":" ws ( number | "null" )       # sequences, ( ) groups, | alternatives, rule names
//   key    ::= [a-z_] [a-z0-9_]*                    # [...] classes with ranges, [^...] negated, . any character
//   number ::= "-"? [0-9]{1,9} ("." [0-9]+)?         # repetition * + ? {m} {m,} {m,n} {,n}
//   ws     ::= [ \t\n]*                             # # starts a comment that runs to the end of the line
//
// Rule names are [A-Za-z0-9_-]+; a rule may span lines (the next starts at `name ::=`). Literals "..." and classes
// take the escapes \n \r \t \xHH \uHHHH \UHHHHHHHH (code points) and \ before any ASCII punctuation. Characters are
// Unicode scalar values matched as their UTF-8 bytes, so output is always valid UTF-8. Refused, with the line and
// column: syntax errors, undefined or twice-defined rules, no root, empty classes, counts above GRAMMAR_MAX_COUNT,
// a reachable rule that can never end (every alternative needs the rule again), left recursion (a rule that
// reaches itself before any character: it would expand forever), and grammars past the size limits below.
// Converters write such grammars: json_schema_to_gbnf (OpenAI strict-mode JSON Schema), json_object_gbnf,
// regex_to_gbnf (vLLM guided_regex), choices_to_gbnf (guided_choice); grammar_from_* compile them.
//
// Execution: a pushdown automaton over bytes. Small non-recursive rules are inlined into their callers; each
// remaining rule becomes a DFA (Thompson NFA, subset construction, Hopcroft minimisation) whose edges are byte
// classes or calls of other rules. A parse state is a set of stacks; a stack is a chain of frames (DFA state, parent frame) kept in a
// pool, frames never change, so stacks share their bottoms. The top frame's state has byte edges; the frames
// below hold the states to return to. A byte moves each top along its edge; then, without consuming input, a
// state's call edges push the callee's start, and a final state pops (the rule returned). The root returning
// leaves the stack "done": only the end of the text may follow.
//
// Token masks (the idea of XGrammar's adaptive token-mask cache). Binding a grammar to a vocabulary
// (TokenGrammar) walks, for every DFA state q with byte edges, a trie of all token byte strings from the stack
// [q] over a bottom marker; along a trie path, the stacks after each byte are shared by every token below it.
// A token consumed inside q's frame (or ending exactly as the frame returns) is allowed in every context;
// one that fails inside the frame is refused in every context; one that makes the frame return with bytes left
// depends on the stack below, so its remaining bytes after each such return (its suffixes) go into a small
// per-state trie. The mask of a parse state is then, for each stack, the allowed set of its top state plus
// one walk of that state's suffix trie from the real stack below: a few microseconds for a 151k vocabulary,
// instead of walking every token through the automaton at each step. GrammarMatcher does this per sequence.
//
// Use: a TokenTrie per vocabulary; bind_grammar(grammar_from_json_schema(text), trie) per grammar (the tables:
// from milliseconds to about a second for a large schema, on up to 8 threads; share the result); a
// GrammarMatcher per sequence: allowed(mask) before each token, advance(id) after it. Session::generate does
// this when GenerateOptions::grammar is set.

constexpr int GRAMMAR_MAX_NESTING = 64;        // ( ) groups in a grammar or regex; arrays/objects in schema JSON
constexpr size_t GRAMMAR_MAX_TEXT = 1u << 20;  // bytes of grammar text
constexpr size_t GRAMMAR_MAX_RULES = 10000;
constexpr int GRAMMAR_MAX_COUNT = 100000;        // m and n in {m,n}
constexpr size_t GRAMMAR_MAX_NFA = 1u << 19;     // NFA states of all rules together
constexpr size_t GRAMMAR_MAX_STATES = 1u << 16;  // DFA states of all rules together
constexpr size_t GRAMMAR_MAX_STACKS = 1024;      // stacks in one parse state (only a very ambiguous grammar gets near)
// Inlining: a rule is inlined when its expression nodes times its copies in the callers (repetitions {m,n} copy)
// are at most GRAMMAR_INLINE_SIZE, or it has at most GRAMMAR_INLINE_ALWAYS nodes (whitespace, a JSON string:
// a token ending such a rule and going on would depend on the stack below), and it is at most this deep.
constexpr int GRAMMAR_INLINE_SIZE = 4000;
constexpr int GRAMMAR_INLINE_ALWAYS = 100;
constexpr int GRAMMAR_INLINE_DEPTH = 256;

// printf into a std::string (one line of an error message, or a piece of generated grammar).
inline std::string sformat(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

// The line and column (1-based; columns count bytes) of byte offset `at` of `text`.
inline std::pair<int, int> line_col(const std::string& text, size_t at) {
    int line = 1;
    size_t start = 0;
    for (size_t i = 0; i < at && i < text.size(); i++)
        if (text[i] == '\n') line++, start = i + 1;
    return {line, int(at - start) + 1};
}

// ----------------------------------------------------------------------------
// Character sets: code point ranges and their UTF-8 byte sequences
// ----------------------------------------------------------------------------

using CodeRanges = std::vector<std::pair<uint32_t, uint32_t>>;  // inclusive code point ranges

// Sorted, merged, and cut to the Unicode scalar values (no surrogates D800..DFFF, nothing above 10FFFF).
inline CodeRanges normalize_ranges(CodeRanges r) {
    std::sort(r.begin(), r.end());
    CodeRanges merged, out;
    for (auto [lo, hi] : r) {
        hi = std::min<uint32_t>(hi, 0x10FFFF);
        if (lo > hi) continue;
        if (!merged.empty() && lo <= merged.back().second + 1)
            merged.back().second = std::max(merged.back().second, hi);
        else
            merged.push_back({lo, hi});
    }
    for (auto [lo, hi] : merged) {
        if (lo < 0xD800) out.push_back({lo, std::min<uint32_t>(hi, 0xD7FF)});
        if (hi > 0xDFFF) out.push_back({std::max<uint32_t>(lo, 0xE000), hi});
    }
    return out;
}

inline CodeRanges complement_ranges(const CodeRanges& r) {  // r normalised
    CodeRanges out;
    uint32_t next = 0;
    for (auto [lo, hi] : r) {
        if (lo > next) out.push_back({next, lo - 1});
        next = hi + 1;
    }
    if (next <= 0x10FFFF) out.push_back({next, 0x10FFFF});
    return normalize_ranges(out);
}

inline CodeRanges intersect_ranges(const CodeRanges& a, const CodeRanges& b) {  // both normalised
    CodeRanges out;
    for (size_t i = 0, j = 0; i < a.size() && j < b.size();) {
        uint32_t lo = std::max(a[i].first, b[j].first), hi = std::min(a[i].second, b[j].second);
        if (lo <= hi) out.push_back({lo, hi});
        if (a[i].second < b[j].second)
            i++;
        else
            j++;
    }
    return out;
}

inline bool in_code_ranges(const CodeRanges& r, uint32_t cp) {
    for (auto [lo, hi] : r)
        if (cp >= lo && cp <= hi) return true;
    return false;
}

using ByteSeq = std::vector<std::pair<uint8_t, uint8_t>>;  // one (lo, hi) byte range per byte of a UTF-8 encoding

// Appends the byte-range sequences whose concatenations are exactly the UTF-8 encodings of the scalar values
// lo..hi. Split first where the encoded length changes, then until every byte after the first one that varies
// spans all 64 continuation values; then the ranges of lo's and hi's bytes, position by position, are exact.
inline void utf8_sequences(uint32_t lo, uint32_t hi, std::vector<ByteSeq>& out) {
    static const uint32_t kLast[3] = {0x7F, 0x7FF, 0xFFFF};  // the last code point of each encoded length
    for (uint32_t last : kLast)
        if (lo <= last && hi > last) {
            utf8_sequences(lo, last, out);
            utf8_sequences(last + 1, hi, out);
            return;
        }
    int len = hi <= 0x7F ? 1 : hi <= 0x7FF ? 2 : hi <= 0xFFFF ? 3 : 4;
    for (int i = 1; i < len; i++) {
        uint32_t m = (1u << (6 * i)) - 1;  // the bits of the last i bytes
        if ((lo & ~m) == (hi & ~m)) continue;
        if ((lo & m) != 0) {
            utf8_sequences(lo, lo | m, out);
            utf8_sequences((lo | m) + 1, hi, out);
            return;
        }
        if ((hi & m) != m) {
            utf8_sequences(lo, (hi & ~m) - 1, out);
            utf8_sequences(hi & ~m, hi, out);
            return;
        }
    }
    std::string a, b;
    utf8_append(a, lo);
    utf8_append(b, hi);
    ByteSeq seq;
    for (int i = 0; i < len; i++) seq.push_back({uint8_t(a[size_t(i)]), uint8_t(b[size_t(i)])});
    out.push_back(seq);
}

// ----------------------------------------------------------------------------
// Grammar text: the expression tree and the GBNF parser
// ----------------------------------------------------------------------------

struct GrammarExpr {
    enum Kind : uint8_t { CHARS, SEQ, ALT, REPEAT, REF };
    Kind kind = SEQ;
    CodeRanges chars;        // CHARS: the characters (normalised, never empty)
    std::vector<int> parts;  // SEQ, ALT: the parts in order (an empty SEQ matches ""); REPEAT: the repeated one
    int min = 0, max = 0;    // REPEAT: the count range; max -1: no limit
    int rule = -1;           // REF: the rule
};

struct GrammarRule {
    std::string name;
    int body = -1;  // -1: named but never defined
    size_t at = 0;  // byte offset of its definition (or, undefined, of its first use)
};

struct GrammarAst {
    std::string text;
    std::vector<GrammarExpr> exprs;
    std::vector<GrammarRule> rules;
    int root = -1;

    [[noreturn]] void fail_at(size_t at, const std::string& msg) const {
        auto [line, col] = line_col(text, at);
        fail("grammar: line %d col %d: %s", line, col, msg.c_str());
    }
};

struct GbnfParser {
    GrammarAst& g;
    size_t pos = 0;
    std::unordered_map<std::string, int> ids;  // rule name -> index in g.rules

    explicit GbnfParser(GrammarAst& ast) : g(ast) {}

    const std::string& s() const { return g.text; }
    bool eof() const { return pos >= g.text.size(); }
    char peek() const { return eof() ? '\0' : g.text[pos]; }
    static bool word_char(char c) { return std::isalnum(uint8_t(c)) || c == '-' || c == '_'; }

    void skip() {  // spaces, line breaks and comments
        while (!eof()) {
            char c = s()[pos];
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
                pos++;
            else if (c == '#')
                while (!eof() && s()[pos] != '\n') pos++;
            else
                break;
        }
    }
    bool at_rule_start() const {  // `name ::=` begins here
        size_t p = pos;
        while (p < s().size() && word_char(s()[p])) p++;
        if (p == pos) return false;
        while (p < s().size() && (s()[p] == ' ' || s()[p] == '\t')) p++;
        return s().compare(p, 3, "::=") == 0;
    }
    int add(GrammarExpr e) {
        g.exprs.push_back(std::move(e));
        return int(g.exprs.size()) - 1;
    }
    int chars(const CodeRanges& r, size_t at) {
        GrammarExpr e;
        e.kind = GrammarExpr::CHARS;
        e.chars = normalize_ranges(r);
        if (e.chars.empty()) g.fail_at(at, "empty character class");
        return add(std::move(e));
    }
    int group(GrammarExpr::Kind kind, std::vector<int> parts) {
        if (parts.size() == 1) return parts[0];
        GrammarExpr e;
        e.kind = kind;
        e.parts = std::move(parts);
        return add(std::move(e));
    }
    int rule_id(const std::string& name, size_t at) {
        auto it = ids.find(name);
        if (it != ids.end()) return it->second;
        if (g.rules.size() >= GRAMMAR_MAX_RULES) g.fail_at(at, sformat("more than %zu rules", GRAMMAR_MAX_RULES));
        g.rules.push_back({name, -1, at});
        return ids[name] = int(g.rules.size()) - 1;
    }

    uint32_t hex(int digits, size_t at) {
        uint32_t v = 0;
        for (int i = 0; i < digits; i++, pos++) {
            char c = peek();
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0) g.fail_at(at, sformat("expected %d hex digits after the escape", digits));
            v = v * 16 + uint32_t(d);
        }
        return v;
    }
    // One character of a literal or class: an escape or one UTF-8 sequence.
    uint32_t character() {
        size_t at = pos;
        if (s()[pos] != '\\') {
            uint32_t cp = 0;
            int len = utf8_decode(reinterpret_cast<const uint8_t*>(s().data()) + pos, s().size() - pos, &cp);
            if (len <= 0) g.fail_at(at, "invalid UTF-8");
            pos += size_t(len);
            return cp;
        }
        pos++;
        if (eof()) g.fail_at(at, "unfinished escape");
        char c = s()[pos++];
        uint32_t cp;
        switch (c) {
            case 'n':
                return '\n';
            case 'r':
                return '\r';
            case 't':
                return '\t';
            case 'x':
                cp = hex(2, at);
                break;
            case 'u':
                cp = hex(4, at);
                break;
            case 'U':
                cp = hex(8, at);
                break;
            default:
                if (std::ispunct(uint8_t(c))) return uint8_t(c);
                g.fail_at(at, std::isprint(uint8_t(c)) ? sformat("unknown escape '\\%c'", c) : "unknown escape");
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) g.fail_at(at, "the escape is not a Unicode scalar value");
        return cp;
    }
    int literal() {
        size_t at = pos++;
        std::vector<int> parts;
        for (;;) {
            if (eof()) g.fail_at(at, "unterminated string literal");
            if (s()[pos] == '"') break;
            uint32_t cp = character();
            parts.push_back(chars({{cp, cp}}, at));
        }
        pos++;
        if (parts.size() == 1) return parts[0];
        GrammarExpr e;  // a SEQ, also for "" (matches the empty string)
        e.parts = std::move(parts);
        return add(std::move(e));
    }
    int char_class() {
        size_t at = pos++;
        bool negate = peek() == '^';
        if (negate) pos++;
        CodeRanges r;
        for (;;) {
            if (eof()) g.fail_at(at, "unterminated character class");
            if (s()[pos] == ']') break;
            uint32_t lo = character(), hi = lo;
            if (peek() == '-' && pos + 1 < s().size() && s()[pos + 1] != ']') {
                pos++;
                hi = character();
                if (hi < lo) g.fail_at(at, "character range is reversed");
            }
            r.push_back({lo, hi});
        }
        pos++;
        r = normalize_ranges(r);
        return chars(negate ? complement_ranges(r) : r, at);
    }
    int count(size_t at) {
        if (!std::isdigit(uint8_t(peek()))) g.fail_at(at, "expected a number in { }");
        long v = 0;
        while (std::isdigit(uint8_t(peek()))) {
            v = v * 10 + (s()[pos++] - '0');
            if (v > GRAMMAR_MAX_COUNT) g.fail_at(at, sformat("repetition count above %d", GRAMMAR_MAX_COUNT));
        }
        return int(v);
    }
    int postfix(int e) {
        bool repeated = false;
        for (;;) {
            skip();
            size_t at = pos;
            char c = peek();
            if (c != '*' && c != '+' && c != '?' && c != '{') return e;
            if (repeated) g.fail_at(at, "a repetition of a repetition: add parentheses");
            repeated = true;
            pos++;
            GrammarExpr x;
            x.kind = GrammarExpr::REPEAT;
            x.parts = {e};
            x.min = c == '+' ? 1 : 0;
            x.max = c == '?' ? 1 : -1;
            if (c == '{') {
                x.min = x.max = peek() == ',' ? 0 : count(at);
                if (peek() == ',') {
                    pos++;
                    x.max = peek() == '}' ? -1 : count(at);
                }
                if (peek() != '}') g.fail_at(at, "expected '}' to close the repetition");
                pos++;
                if (x.max >= 0 && x.max < x.min) g.fail_at(at, "repetition {m,n} with n < m");
            }
            e = add(std::move(x));
        }
    }
    int primary(int depth) {
        size_t at = pos;
        char c = peek();
        if (c == '"') return literal();
        if (c == '[') return char_class();
        if (c == '.') {
            pos++;
            return chars({{0, 0x10FFFF}}, at);
        }
        if (c == '(') {
            if (depth >= GRAMMAR_MAX_NESTING)
                g.fail_at(at, sformat("groups nested deeper than %d", GRAMMAR_MAX_NESTING));
            pos++;
            int e = alternatives(depth + 1);
            skip();
            if (peek() != ')') g.fail_at(at, "'(' is not closed");
            pos++;
            return e;
        }
        if (word_char(c)) {
            while (!eof() && word_char(s()[pos])) pos++;
            GrammarExpr x;
            x.kind = GrammarExpr::REF;
            x.rule = rule_id(s().substr(at, pos - at), at);
            return add(std::move(x));
        }
        g.fail_at(at, std::isprint(uint8_t(c)) ? sformat("unexpected '%c'", c)
                                               : sformat("unexpected byte 0x%02X", uint8_t(c)));
    }
    int sequence(int depth) {
        std::vector<int> items;
        for (;;) {
            skip();
            char c = peek();
            if (eof() || c == '|' || c == ')' || at_rule_start()) break;
            items.push_back(postfix(primary(depth)));
        }
        if (items.size() == 1) return items[0];
        GrammarExpr e;  // a SEQ; empty: the empty string
        e.parts = std::move(items);
        return add(std::move(e));
    }
    int alternatives(int depth) {
        std::vector<int> alts{sequence(depth)};
        while (skip(), peek() == '|') {
            pos++;
            alts.push_back(sequence(depth));
        }
        return group(GrammarExpr::ALT, std::move(alts));
    }

    void parse() {
        if (s().size() > GRAMMAR_MAX_TEXT) fail("grammar: longer than %zu bytes", GRAMMAR_MAX_TEXT);
        for (;;) {
            skip();
            if (eof()) break;
            size_t at = pos;
            if (!word_char(peek())) g.fail_at(at, peek() == ')' ? "unmatched ')'" : "expected a rule name");
            while (!eof() && word_char(s()[pos])) pos++;
            std::string name = s().substr(at, pos - at);
            while (peek() == ' ' || peek() == '\t') pos++;
            if (s().compare(pos, 3, "::=") != 0) g.fail_at(pos, sformat("expected '::=' after '%s'", name.c_str()));
            pos += 3;
            int r = rule_id(name, at);
            if (g.rules[size_t(r)].body >= 0) g.fail_at(at, sformat("rule '%s' is defined twice", name.c_str()));
            int body = alternatives(0);
            g.rules[size_t(r)].body = body;
            g.rules[size_t(r)].at = at;
        }
        if (g.rules.empty()) fail("grammar: empty (no rules)");
        for (const GrammarRule& r : g.rules)
            if (r.body < 0) g.fail_at(r.at, sformat("undefined rule '%s'", r.name.c_str()));
        auto it = ids.find("root");
        if (it == ids.end()) fail("grammar: no rule named 'root'");
        g.root = it->second;
    }
};

// ----------------------------------------------------------------------------
// Grammar checks: rules that can never end, left recursion; which rules to inline
// ----------------------------------------------------------------------------

// Whether expression e matches "" (want_empty) or matches some finite text (!want_empty), given that answer
// for each rule in `rule_val`.
inline bool expr_holds(const GrammarAst& g, int e, const std::vector<char>& rule_val, bool want_empty) {
    const GrammarExpr& x = g.exprs[size_t(e)];
    switch (x.kind) {
        case GrammarExpr::CHARS:
            return !want_empty;
        case GrammarExpr::SEQ:
            for (int p : x.parts)
                if (!expr_holds(g, p, rule_val, want_empty)) return false;
            return true;
        case GrammarExpr::ALT:
            for (int p : x.parts)
                if (expr_holds(g, p, rule_val, want_empty)) return true;
            return false;
        case GrammarExpr::REPEAT:
            return x.min == 0 || expr_holds(g, x.parts[0], rule_val, want_empty);
        case GrammarExpr::REF:
            return rule_val[size_t(x.rule)];
    }
    return false;
}

// The rules that expression e refers to; given `nullable` (per rule: matches ""), only those it may call before
// consuming a character.
inline void expr_refs(const GrammarAst& g, int e, const std::vector<char>* nullable, std::vector<int>& out) {
    const GrammarExpr& x = g.exprs[size_t(e)];
    if (x.kind == GrammarExpr::REF) out.push_back(x.rule);
    if (x.kind == GrammarExpr::REPEAT && x.max == 0) return;
    for (int p : x.parts) {
        expr_refs(g, p, nullable, out);
        if (nullable && x.kind == GrammarExpr::SEQ && !expr_holds(g, p, *nullable, true)) break;
    }
}

// Adds to copies[r] how many copies of rule r the NFA of expression e holds (repetitions {m,n} copy their part).
inline void count_copies(const GrammarAst& g, int e, long mult, std::vector<long>& copies) {
    const GrammarExpr& x = g.exprs[size_t(e)];
    if (x.kind == GrammarExpr::REF) copies[size_t(x.rule)] = std::min(copies[size_t(x.rule)] + mult, 1L << 30);
    if (x.kind == GrammarExpr::REPEAT) mult = std::min(mult * std::max(1, x.max < 0 ? x.min + 1 : x.max), 1L << 30);
    for (int p : x.parts) count_copies(g, p, mult, copies);
}

// Fixed point of a rule property that can only turn true (matches "", or can end): a rule is looked at again
// when a rule it refers to turns true.
inline std::vector<char> rule_fixed_point(const GrammarAst& g, const std::vector<std::vector<int>>& callers,
                                          bool want_empty) {
    std::vector<char> val(g.rules.size(), 0);
    std::vector<int> work;
    for (size_t r = 0; r < g.rules.size(); r++) work.push_back(int(r));
    while (!work.empty()) {
        int r = work.back();
        work.pop_back();
        if (val[size_t(r)] || !expr_holds(g, g.rules[size_t(r)].body, val, want_empty)) continue;
        val[size_t(r)] = 1;
        for (int c : callers[size_t(r)])
            if (!val[size_t(c)]) work.push_back(c);
    }
    return val;
}

// Strongly connected components of a graph (Tarjan's algorithm, iterative), numbered so that a component comes
// after every component it has edges into (callees first).
inline std::vector<int> graph_components(const std::vector<std::vector<int>>& edges, int& n_comp) {
    size_t n = edges.size();
    std::vector<int> index(n, -1), low(n, 0), comp(n, -1), stack;
    std::vector<std::pair<int, size_t>> call;  // DFS: (vertex, next edge)
    int counter = 0;
    n_comp = 0;
    for (size_t s = 0; s < n; s++) {
        if (index[s] >= 0) continue;
        index[s] = low[s] = counter++;
        stack.push_back(int(s));
        call.push_back({int(s), 0});
        while (!call.empty()) {
            int v = call.back().first;
            size_t& i = call.back().second;
            if (i < edges[size_t(v)].size()) {
                int w = edges[size_t(v)][i++];
                if (index[size_t(w)] < 0) {
                    index[size_t(w)] = low[size_t(w)] = counter++;
                    stack.push_back(w);
                    call.push_back({w, 0});
                } else if (comp[size_t(w)] < 0) {
                    low[size_t(v)] = std::min(low[size_t(v)], index[size_t(w)]);
                }
                continue;
            }
            call.pop_back();
            if (!call.empty())
                low[size_t(call.back().first)] = std::min(low[size_t(call.back().first)], low[size_t(v)]);
            if (low[size_t(v)] != index[size_t(v)]) continue;
            int w;
            do {
                w = stack.back();
                stack.pop_back();
                comp[size_t(w)] = n_comp;
            } while (w != v);
            n_comp++;
        }
    }
    return comp;
}

// Size (nodes, counting each copy that a repetition {m,n} makes) and depth of an expression with the inlined
// rules' bodies in place of their references.
inline std::pair<int, int> expanded_size(const GrammarAst& g, int e, const std::vector<char>& inlined,
                                         const std::vector<std::pair<int, int>>& rule_size) {
    const GrammarExpr& x = g.exprs[size_t(e)];
    if (x.kind == GrammarExpr::REF) return inlined[size_t(x.rule)] ? rule_size[size_t(x.rule)] : std::make_pair(1, 1);
    long copies = x.kind == GrammarExpr::REPEAT ? std::max(1, x.max < 0 ? x.min + 1 : x.max) : 1;
    long size = 1;
    int depth = 0;
    for (int p : x.parts) {
        auto [s, d] = expanded_size(g, p, inlined, rule_size);
        size = std::min<long>(size + copies * s, 1 << 30);
        depth = std::max(depth, d);
    }
    return {int(size), depth + 1};
}

// Checks what the parser cannot (rules that never end, left recursion) on the rules reachable from root, and
// picks the rules to inline: non-recursive ones whose copies stay small (see GRAMMAR_INLINE_SIZE), and in a
// cycle of rules, most used first, those that refer neither to themselves nor to another inlined member (a cycle
// keeps at least one rule). Returns, per rule,
// 1 if it is compiled as its own automaton, 2 if inlined, 0 if unreachable.
inline std::vector<char> check_grammar(const GrammarAst& g) {
    size_t n = g.rules.size();
    std::vector<std::vector<int>> refs(n), callers(n);
    std::vector<int> sites(n, 0);    // how often each rule is referred to
    std::vector<long> copies(n, 0);  // how many copies inlining it would make (in its callers' automata)
    for (size_t r = 0; r < n; r++) {
        expr_refs(g, g.rules[r].body, nullptr, refs[r]);
        count_copies(g, g.rules[r].body, 1, copies);
        for (int c : refs[r]) sites[size_t(c)]++;
        std::sort(refs[r].begin(), refs[r].end());
        refs[r].erase(std::unique(refs[r].begin(), refs[r].end()), refs[r].end());
        for (int c : refs[r]) callers[size_t(c)].push_back(int(r));
    }
    std::vector<char> use(n, 0);  // reachable from root
    std::vector<int> work{g.root};
    use[size_t(g.root)] = 1;
    while (!work.empty()) {
        int r = work.back();
        work.pop_back();
        for (int c : refs[size_t(r)])
            if (!use[size_t(c)]) use[size_t(c)] = 1, work.push_back(c);
    }
    std::vector<char> productive = rule_fixed_point(g, callers, false);
    std::vector<char> nullable = rule_fixed_point(g, callers, true);
    int n_comp = 0;
    std::vector<int> comp = graph_components(refs, n_comp);
    std::vector<int> comp_size(static_cast<size_t>(n_comp), 0);
    for (size_t r = 0; r < n; r++) comp_size[size_t(comp[r])]++;
    for (int pass = 0; pass < 2; pass++)  // name a rule of the recursion first, not one that merely uses it
        for (size_t r = 0; r < n; r++) {
            bool cyclic = std::binary_search(refs[r].begin(), refs[r].end(), int(r)) || comp_size[size_t(comp[r])] > 1;
            if (use[r] && !productive[r] && (pass == 1 || cyclic))
                g.fail_at(g.rules[r].at, sformat("rule '%s' can never end: each alternative needs itself again",
                                                 g.rules[r].name.c_str()));
        }
    // Left recursion: a cycle among "may call before consuming a character" edges.
    std::vector<std::vector<int>> first(n);
    for (size_t r = 0; r < n; r++)
        if (use[r]) expr_refs(g, g.rules[r].body, &nullable, first[r]);
    comp = graph_components(first, n_comp);
    comp_size.assign(static_cast<size_t>(n_comp), 0);
    for (size_t r = 0; r < n; r++) comp_size[size_t(comp[r])]++;
    for (size_t r = 0; r < n; r++) {
        bool self = std::find(first[r].begin(), first[r].end(), int(r)) != first[r].end();
        if (use[r] && (self || comp_size[size_t(comp[r])] > 1))
            g.fail_at(g.rules[r].at, sformat("rule '%s' is left-recursive: it can reach itself before any character",
                                             g.rules[r].name.c_str()));
    }
    // Inlining, callees first.
    comp = graph_components(refs, n_comp);
    std::vector<std::vector<int>> members(static_cast<size_t>(n_comp));
    for (size_t r = 0; r < n; r++)
        if (use[r]) members[size_t(comp[r])].push_back(int(r));
    std::vector<char> inlined(n, 0);
    std::vector<std::pair<int, int>> size(n, {1, 1});
    for (const std::vector<int>& m : members) {
        for (int r : m) size[size_t(r)] = expanded_size(g, g.rules[size_t(r)].body, inlined, size);
        std::vector<int> order = m;
        std::sort(order.begin(), order.end(), [&](int a, int b) {  // the most used first (JSON: value, not object)
            return sites[size_t(a)] != sites[size_t(b)] ? sites[size_t(a)] > sites[size_t(b)]
                                                        : size[size_t(a)] < size[size_t(b)];
        });
        for (int r : order) {
            long s = size[size_t(r)].first;
            bool small = s <= GRAMMAR_INLINE_ALWAYS || s * copies[size_t(r)] <= GRAMMAR_INLINE_SIZE;
            if (r == g.root || !small || size[size_t(r)].second > GRAMMAR_INLINE_DEPTH) continue;
            bool ok = true;  // no edge between r and an inlined member of its cycle, r included
            for (int c : refs[size_t(r)]) ok &= !(comp[size_t(c)] == comp[size_t(r)] && (c == r || inlined[size_t(c)]));
            for (int o : m)
                ok &= !(inlined[size_t(o)] && std::binary_search(refs[size_t(o)].begin(), refs[size_t(o)].end(), r));
            if (ok) inlined[size_t(r)] = 1;
        }
        for (int r : m)
            if (inlined[size_t(r)]) size[size_t(r)] = expanded_size(g, g.rules[size_t(r)].body, inlined, size);
    }
    std::vector<char> kind(n, 0);
    for (size_t r = 0; r < n; r++) kind[r] = !use[r] ? 0 : inlined[r] ? 2 : 1;
    return kind;
}

// ----------------------------------------------------------------------------
// Compilation: each rule's NFA (Thompson), then its DFA over byte classes and calls (subset construction)
// ----------------------------------------------------------------------------

// The compiled grammar: immutable, shareable between threads. State ids are global over all rules.
struct Grammar {
    struct State {
        int32_t rule;                     // the rule (index into rule_names) whose DFA this state belongs to
        uint32_t calls_begin, calls_end;  // its call edges: calls[calls_begin .. calls_end)
        bool final;                       // the rule may return here
        bool bytes;                       // some byte moves on from here (a possible stack top)
    };
    struct Call {
        int32_t start;  // the callee's start state
        int32_t ret;    // the state of the caller to continue at when the callee returns
    };
    int n_classes = 0;                    // bytes that every edge treats alike share a class
    uint8_t byte_class[256] = {};         // (256) class of each byte value
    std::vector<int32_t> next;            // (n_states, n_classes) the state after a byte of each class; -1: none
    std::vector<State> states;            // (n_states)
    std::vector<Call> calls;              // (n_calls)
    std::vector<std::string> rule_names;  // (n_rules) of the compiled (not inlined) rules
    int32_t start = 0;                    // the root rule's start state
    std::string text;                     // the GBNF it was compiled from

    int32_t step(int32_t state, uint8_t byte) const { return next[size_t(state) * n_classes + byte_class[byte]]; }
    bool matches(const std::string& text) const;  // is the whole text a sentence of the grammar?
};

// One rule's NFA. An edge consumes one byte in lo..hi, or calls a rule (call >= 0), or neither (epsilon: lo < 0).
struct GrammarNfa {
    struct Edge {
        int32_t from, to;
        int16_t lo, hi;
        int32_t call;
    };
    const GrammarAst& g;
    const std::vector<char>& kind;  // check_grammar's verdict per rule: 2 = inlined
    size_t& budget;                 // NFA states left for the whole grammar
    std::vector<Edge> edges;
    int32_t n_states = 0, end = 0;
    uint8_t* boundary;  // (257) 1 where a byte range starts or ends: the class boundaries

    int32_t state() {
        if (budget == 0) fail("grammar: too large (more than %zu automaton states)", GRAMMAR_MAX_NFA);
        budget--;
        return n_states++;
    }
    void eps(int32_t a, int32_t b) { edges.push_back({a, b, -1, -1, -1}); }

    // Adds the edges of expression e from state `from`; returns the state where e ends. Every construct enters
    // fresh states, so no edge leads back into `from` (which may be the loop state of a preceding repetition).
    int32_t build(int e, int32_t from) {
        const GrammarExpr& x = g.exprs[size_t(e)];
        switch (x.kind) {
            case GrammarExpr::CHARS: {
                int32_t to = state();
                std::vector<ByteSeq> seqs;
                for (auto [lo, hi] : x.chars) utf8_sequences(lo, hi, seqs);
                for (const ByteSeq& q : seqs) {
                    int32_t cur = from;
                    for (size_t i = 0; i < q.size(); i++) {
                        int32_t nx = i + 1 == q.size() ? to : state();
                        edges.push_back({cur, nx, q[i].first, q[i].second, -1});
                        boundary[q[i].first] = boundary[q[i].second + 1] = 1;
                        cur = nx;
                    }
                }
                return to;
            }
            case GrammarExpr::SEQ:
                for (int p : x.parts) from = build(p, from);
                return from;
            case GrammarExpr::ALT: {
                int32_t to = state();
                for (int p : x.parts) {
                    int32_t s = state();
                    eps(from, s);
                    eps(build(p, s), to);
                }
                return to;
            }
            case GrammarExpr::REPEAT: {
                for (int i = 0; i < x.min; i++) {
                    int32_t s = state();
                    eps(from, s);
                    from = build(x.parts[0], s);
                }
                if (x.max < 0) {  // loop: s -> (part) -> s
                    int32_t s = state();
                    eps(from, s);
                    eps(build(x.parts[0], s), s);
                    return s;
                }
                int32_t to = state();
                for (int i = x.min; i < x.max; i++) {
                    eps(from, to);
                    int32_t s = state();
                    eps(from, s);
                    from = build(x.parts[0], s);
                }
                eps(from, to);
                return to;
            }
            case GrammarExpr::REF: {
                if (kind[size_t(x.rule)] == 2) return build(g.rules[size_t(x.rule)].body, from);
                int32_t to = state();
                edges.push_back({from, to, -1, -1, x.rule});
                return to;
            }
        }
        return from;
    }
};

// Subset construction of one rule's DFA, appended to out's tables (calls still name AST rules; fixed up later).
inline int32_t determinize(GrammarNfa& nfa, int32_t rule_index, Grammar& out) {
    size_t n = size_t(nfa.n_states);
    std::vector<uint32_t> offset(n + 1, 0);  // edges by source state
    for (const auto& e : nfa.edges) offset[size_t(e.from) + 1]++;
    for (size_t i = 0; i < n; i++) offset[i + 1] += offset[i];
    std::vector<GrammarNfa::Edge> by_from(nfa.edges.size());
    {
        std::vector<uint32_t> fill(offset.begin(), offset.end() - 1);
        for (const auto& e : nfa.edges) by_from[fill[size_t(e.from)]++] = e;
    }
    std::vector<uint32_t> stamp(n, 0);
    uint32_t now = 0;
    auto closure = [&](std::vector<int32_t> seeds) {  // the states reachable by epsilon edges, sorted
        now++;
        std::vector<int32_t> set;
        for (int32_t s : seeds)
            if (stamp[size_t(s)] != now) stamp[size_t(s)] = now, set.push_back(s);
        for (size_t i = 0; i < set.size(); i++)
            for (uint32_t k = offset[size_t(set[i])]; k < offset[size_t(set[i]) + 1]; k++) {
                const auto& e = by_from[k];
                if (e.lo < 0 && e.call < 0 && stamp[size_t(e.to)] != now)
                    stamp[size_t(e.to)] = now, set.push_back(e.to);
            }
        std::sort(set.begin(), set.end());
        return set;
    };
    const int32_t base = int32_t(out.states.size());
    const int k = out.n_classes;
    std::map<std::vector<int32_t>, int32_t> ids;
    std::vector<std::vector<int32_t>> sets;
    auto id_of = [&](std::vector<int32_t> seeds) {
        std::vector<int32_t> set = closure(std::move(seeds));
        auto it = ids.find(set);
        if (it != ids.end()) return it->second;
        if (out.states.size() >= GRAMMAR_MAX_STATES)
            fail("grammar: too large (more than %zu DFA states)", GRAMMAR_MAX_STATES);
        int32_t id = int32_t(out.states.size());
        out.states.push_back({rule_index, 0, 0, false, false});
        out.next.resize(out.states.size() * size_t(k), -1);
        ids.emplace(set, id);
        sets.push_back(std::move(set));
        return id;
    };
    id_of({0});
    std::vector<std::vector<int32_t>> targets(static_cast<size_t>(k));
    for (size_t i = 0; i < sets.size(); i++) {
        for (auto& t : targets) t.clear();
        std::vector<std::pair<int32_t, int32_t>> calls;  // (rule, NFA target)
        bool final = false;
        for (int32_t s : sets[i]) {
            final |= s == nfa.end;
            for (uint32_t e = offset[size_t(s)]; e < offset[size_t(s) + 1]; e++) {
                const auto& ed = by_from[e];
                if (ed.call >= 0)
                    calls.push_back({ed.call, ed.to});
                else if (ed.lo >= 0)
                    for (int c = out.byte_class[ed.lo]; c <= out.byte_class[ed.hi]; c++)
                        targets[size_t(c)].push_back(ed.to);
            }
        }
        int32_t id = base + int32_t(i);
        for (int c = 0; c < k; c++)
            if (!targets[size_t(c)].empty()) {
                int32_t t = id_of(targets[size_t(c)]);
                out.next[size_t(id) * k + c] = t;
                out.states[size_t(id)].bytes = true;
            }
        std::sort(calls.begin(), calls.end());
        out.states[size_t(id)].calls_begin = uint32_t(out.calls.size());
        for (size_t a = 0; a < calls.size();) {
            size_t b = a;
            std::vector<int32_t> to;
            while (b < calls.size() && calls[b].first == calls[a].first) to.push_back(calls[b++].second);
            int32_t t = id_of(to);
            out.calls.push_back({calls[a].first, t});
            a = b;
        }
        out.states[size_t(id)].calls_end = uint32_t(out.calls.size());
        out.states[size_t(id)].final = final;
    }
    return base;
}

// Merges equivalent states: Hopcroft's partition refinement in the form for partial transition functions
// (Valmari and Lehtinen, 2008), O(m log n) for m transitions. The alphabet is the byte classes and one symbol
// per callee (a call edge moves to its return state); states start split by finality. Copies of an inlined rule
// often share their future, and each state left costs a trie walk when the grammar is bound to a vocabulary.
inline void minimize(Grammar& g) {
    const size_t n = g.states.size(), k = size_t(g.n_classes);
    struct Edge {
        int32_t symbol, from;
    };
    std::vector<std::vector<Edge>> in(n);  // incoming transitions of each state
    std::unordered_map<int32_t, int32_t> callee_symbol;
    for (size_t s = 0; s < n; s++) {
        for (size_t c = 0; c < k; c++)
            if (g.next[s * k + c] >= 0) in[size_t(g.next[s * k + c])].push_back({int32_t(c), int32_t(s)});
        for (uint32_t c = g.states[s].calls_begin; c < g.states[s].calls_end; c++) {
            auto it = callee_symbol.emplace(g.calls[c].start, int32_t(k + callee_symbol.size())).first;
            in[size_t(g.calls[c].ret)].push_back({it->second, int32_t(s)});
        }
    }
    // The partition: block b holds elems[first[b] .. end[b]); marked states are moved to the front (up to mid).
    std::vector<int32_t> elems(n), loc(n), blk(n), first, end, mid;
    std::vector<char> in_work;
    std::vector<int32_t> work;
    for (int fin = 1; fin >= 0; fin--) {
        int32_t b = int32_t(first.size()), start = int32_t(b == 0 ? 0 : end.back());
        int32_t e = start;
        for (size_t s = 0; s < n; s++)
            if (g.states[s].final == bool(fin)) elems[size_t(e)] = int32_t(s), loc[s] = e++, blk[s] = b;
        if (e == start) continue;
        first.push_back(start), end.push_back(e), mid.push_back(start), in_work.push_back(1), work.push_back(b);
    }
    std::vector<int32_t> touched, splitter;
    std::vector<Edge> edges;
    while (!work.empty()) {
        int32_t B = work.back();
        work.pop_back();
        in_work[size_t(B)] = 0;
        splitter.assign(elems.begin() + first[size_t(B)], elems.begin() + end[size_t(B)]);
        edges.clear();
        for (int32_t t : splitter) edges.insert(edges.end(), in[size_t(t)].begin(), in[size_t(t)].end());
        std::sort(edges.begin(), edges.end(), [](const Edge& x, const Edge& y) { return x.symbol < y.symbol; });
        for (size_t i = 0; i < edges.size();) {  // one symbol at a time: mark its preimage of B, then split
            size_t j = i;
            for (; j < edges.size() && edges[j].symbol == edges[i].symbol; j++) {
                int32_t s = edges[j].from, Y = blk[size_t(s)];
                if (loc[size_t(s)] < mid[size_t(Y)]) continue;  // marked already
                if (mid[size_t(Y)] == first[size_t(Y)]) touched.push_back(Y);
                int32_t other = elems[size_t(mid[size_t(Y)])];
                std::swap(elems[size_t(loc[size_t(s)])], elems[size_t(mid[size_t(Y)])]);
                std::swap(loc[size_t(s)], loc[size_t(other)]);
                mid[size_t(Y)]++;
            }
            i = j;
            for (int32_t Y : touched) {
                if (mid[size_t(Y)] == end[size_t(Y)]) {  // all of Y: no split
                    mid[size_t(Y)] = first[size_t(Y)];
                    continue;
                }
                int32_t Z = int32_t(first.size());  // the marked part becomes block Z
                first.push_back(first[size_t(Y)]), end.push_back(mid[size_t(Y)]), mid.push_back(first[size_t(Y)]);
                in_work.push_back(0);
                first[size_t(Y)] = mid[size_t(Y)];
                for (int32_t p = first[size_t(Z)]; p < end[size_t(Z)]; p++) blk[size_t(elems[size_t(p)])] = Z;
                bool z_smaller = end[size_t(Z)] - first[size_t(Z)] <= end[size_t(Y)] - first[size_t(Y)];
                int32_t add = in_work[size_t(Y)] || z_smaller ? Z : Y;
                in_work[size_t(add)] = 1;
                work.push_back(add);
            }
            touched.clear();
        }
    }
    size_t n_blocks = first.size();
    if (n_blocks == n) return;
    Grammar m;
    m.n_classes = g.n_classes;
    std::copy(std::begin(g.byte_class), std::end(g.byte_class), m.byte_class);
    m.rule_names = g.rule_names;
    m.text = g.text;
    m.start = blk[size_t(g.start)];
    m.states.resize(n_blocks);
    m.next.assign(n_blocks * k, -1);
    for (size_t b = 0; b < n_blocks; b++) {
        size_t s = size_t(elems[size_t(first[b])]);  // any state of the block
        const Grammar::State& st = g.states[s];
        for (size_t c = 0; c < k; c++) {
            int32_t t = g.next[s * k + c];
            m.next[b * k + c] = t < 0 ? -1 : blk[size_t(t)];
        }
        m.states[b] = {st.rule, uint32_t(m.calls.size()), 0, st.final, st.bytes};
        for (uint32_t c = st.calls_begin; c < st.calls_end; c++)
            m.calls.push_back({blk[size_t(g.calls[c].start)], blk[size_t(g.calls[c].ret)]});
        m.states[b].calls_end = uint32_t(m.calls.size());
    }
    g = std::move(m);
}

// Parses, checks and compiles GBNF text.
inline Grammar grammar_from_gbnf(const std::string& text) {
    GrammarAst ast;
    ast.text = text;
    GbnfParser(ast).parse();
    std::vector<char> kind = check_grammar(ast);
    Grammar out;
    out.text = text;
    uint8_t boundary[257] = {};
    boundary[0] = 1;
    size_t budget = GRAMMAR_MAX_NFA;
    std::vector<GrammarNfa> nfas;
    for (size_t r = 0; r < ast.rules.size(); r++) {
        if (kind[r] != 1) continue;
        nfas.push_back(GrammarNfa{ast, kind, budget, {}, 0, 0, boundary});
        int32_t start = nfas.back().state();
        nfas.back().end = nfas.back().build(ast.rules[r].body, start);
    }
    for (int b = 0; b < 256; b++) {
        out.n_classes += boundary[b];
        out.byte_class[b] = uint8_t(out.n_classes - 1);
    }
    std::vector<int32_t> start_of(ast.rules.size(), -1);
    size_t i = 0;
    for (size_t r = 0; r < ast.rules.size(); r++) {
        if (kind[r] != 1) continue;
        start_of[r] = determinize(nfas[i], int32_t(out.rule_names.size()), out);
        out.rule_names.push_back(ast.rules[r].name);
        std::vector<GrammarNfa::Edge>().swap(nfas[i++].edges);  // free its memory
    }
    for (Grammar::Call& c : out.calls) c.start = start_of[size_t(c.start)];
    out.start = start_of[size_t(ast.root)];
    minimize(out);
    return out;
}

// ----------------------------------------------------------------------------
// Parse states: sets of stacks of frames
// ----------------------------------------------------------------------------

// The frames of a grammar's stacks and the two moves on a set of stacks. A stack is named by its top frame;
// BOTTOM is the parent of the root rule's frame, DONE stands in a set for the stack whose root has returned.
// A frame with state -1 is a marker that TokenGrammar puts at the bottom of its walks ("the frame below").
struct GrammarStacks {
    static constexpr int32_t BOTTOM = -1, DONE = -2;
    struct Frame {
        int32_t state, parent;
    };
    const Grammar* g;
    std::vector<Frame> pool;  // frames; a stack's frames come before the frames above them

    explicit GrammarStacks(const Grammar& grammar) : g(&grammar) {}

    int32_t push(int32_t state, int32_t parent) {
        pool.push_back({state, parent});
        return int32_t(pool.size()) - 1;
    }
    // The stacks of the text's start.
    void start(std::vector<int32_t>& out) {
        out.clear();
        seen_.clear();
        close(push(g->start, BOTTOM), out);
    }
    // The stack tops reachable from frame f without consuming a byte, added to out: f itself if its state has
    // byte edges; what its state's calls push (callee start over the return state); what a return pops to.
    // Each (state, parent) is expanded once per step (seen_), which also ends loops of rules that match "".
    void close(int32_t f, std::vector<int32_t>& out) {
        work_.clear();
        work_.push_back(f);
        while (!work_.empty()) {
            int32_t n = work_.back();
            work_.pop_back();
            if (n == BOTTOM) {
                add(out, DONE);
                continue;
            }
            Frame fr = pool[size_t(n)];
            if (fr.state < 0) {  // the walk's bottom marker: the frame below returned
                add(out, n);
                continue;
            }
            const Grammar::State& s = g->states[size_t(fr.state)];
            if (s.calls_begin == s.calls_end && !s.final) {
                add(out, n);
                continue;
            }
            bool seen = false;
            for (const Frame& x : seen_) seen |= x.state == fr.state && x.parent == fr.parent;
            if (seen) continue;
            seen_.push_back(fr);
            if (s.bytes) add(out, n);
            for (uint32_t c = s.calls_begin; c < s.calls_end; c++)
                work_.push_back(push(g->calls[c].start, push(g->calls[c].ret, fr.parent)));
            if (s.final) work_.push_back(fr.parent);
        }
    }
    // out = the stacks after one byte of class c from the stacks `in` (empty: the byte is refused).
    void step(const std::vector<int32_t>& in, int c, std::vector<int32_t>& out) {
        out.clear();
        seen_.clear();
        for (int32_t f : in) {
            if (f < 0) continue;
            Frame fr = pool[size_t(f)];
            if (fr.state < 0) continue;
            int32_t t = g->next[size_t(fr.state) * g->n_classes + c];
            if (t < 0) continue;
            int32_t nf = t == fr.state ? f : push(t, fr.parent);  // frames never change: a loop reuses its frame
            const Grammar::State& s = g->states[size_t(t)];
            if (in.size() == 1 && s.calls_begin == s.calls_end && !s.final)
                out.push_back(nf);  // the common case
            else
                close(nf, out);
        }
    }
    void begin_closure() { seen_.clear(); }

  private:
    std::vector<int32_t> work_;
    std::vector<Frame> seen_;

    void add(std::vector<int32_t>& out, int32_t f) {
        for (int32_t x : out)
            if (x == f || (x >= 0 && f >= 0 && pool[size_t(x)].state == pool[size_t(f)].state &&
                           pool[size_t(x)].parent == pool[size_t(f)].parent))
                return;
        if (out.size() >= GRAMMAR_MAX_STACKS)
            fail("grammar: more than %zu parses at once (the grammar is too ambiguous)", GRAMMAR_MAX_STACKS);
        out.push_back(f);
    }
};

inline bool Grammar::matches(const std::string& s) const {
    GrammarStacks st(*this);
    std::vector<int32_t> a, b;
    st.start(a);
    for (char c : s) {
        st.step(a, byte_class[uint8_t(c)], b);
        if (b.empty()) return false;
        a.swap(b);
    }
    return std::find(a.begin(), a.end(), GrammarStacks::DONE) != a.end();
}

// ----------------------------------------------------------------------------
// Token masks: the vocabulary trie, the per-state tables, the matcher
// ----------------------------------------------------------------------------

inline int mask_words(int n_vocab) { return (n_vocab + 31) / 32; }
inline bool mask_test(const uint32_t* mask, int id) { return (mask[id >> 5] >> (id & 31)) & 1u; }
inline void mask_set(uint32_t* mask, int id) { mask[id >> 5] |= 1u << (id & 31); }

// A trie of byte strings with an id on each string's last node, stored in preorder: a walk is one pass over
// the arrays that skips a refused node's subtree by jumping to its end.
struct ByteTrie {
    std::vector<uint8_t> byte;    // (n_nodes) the byte that leads to each node (the root is not stored)
    std::vector<uint16_t> depth;  // (n_nodes) 1 for the root's children
    std::vector<int32_t> end;     // (n_nodes) the index after the node's subtree
    std::vector<int32_t> first;   // (n_nodes + 1) node i holds ids[first[i] .. first[i + 1])
    std::vector<int32_t> ids;     // (n_items) by node
    int max_depth = 0;

    ByteTrie() = default;
    // items: (bytes, id); the bytes must outlive the call only.
    explicit ByteTrie(std::vector<std::pair<std::string_view, int32_t>> items) {
        std::sort(items.begin(), items.end());
        std::vector<int32_t> open;  // the path to the last node
        const std::string_view* prev = nullptr;
        for (const auto& [s, id] : items) {
            if (s.empty()) continue;
            if (s.size() > 65535) fail("grammar: a token of %zu bytes (at most 65535)", s.size());
            size_t l = 0;
            while (prev && l < prev->size() && l < s.size() && (*prev)[l] == s[l]) l++;
            for (; open.size() > l; open.pop_back()) end[size_t(open.back())] = int32_t(byte.size());
            for (size_t d = l; d < s.size(); d++) {
                open.push_back(int32_t(byte.size()));
                byte.push_back(uint8_t(s[d]));
                depth.push_back(uint16_t(d + 1));
                end.push_back(0);
                first.push_back(int32_t(ids.size()));
            }
            ids.push_back(id);  // sorted input: s's last node is the newest node
            max_depth = std::max(max_depth, int(s.size()));
            prev = &s;
        }
        for (; !open.empty(); open.pop_back()) end[size_t(open.back())] = int32_t(byte.size());
        first.push_back(int32_t(ids.size()));
    }
    size_t size() const { return byte.size(); }
};

// The tokens a grammar may choose from: every regular and non-special added token with an id below n_vocab.
// Special tokens (<|im_end|>) are never text; the stop ids are allowed by the caller where the grammar may end.
struct TokenTrie {
    int n_vocab = 0;                 // token ids are < n_vocab
    ByteTrie trie;                   // the byte strings of the usable tokens
    std::vector<std::string> bytes;  // (n_vocab) each token's bytes
    std::vector<uint32_t> usable;    // (mask_words(n_vocab)) bit set: the ids in the trie

    // n_vocab: how many ids the model samples from (-1: all of the vocabulary's).
    explicit TokenTrie(const Vocab& v, int n = -1) {
        n_vocab = n < 0 ? int(v.tokens.size()) : std::min(n, int(v.tokens.size()));
        if (v.kind.size() != v.tokens.size())
            fail("grammar: vocabulary has %zu tokens but %zu kinds", v.tokens.size(), v.kind.size());
        bytes.assign(v.tokens.begin(), v.tokens.begin() + n_vocab);
        usable.assign(size_t(mask_words(n_vocab)), 0);
        std::vector<std::pair<std::string_view, int32_t>> items;
        for (int id = 0; id < n_vocab; id++)
            if (v.kind[size_t(id)] != TOKEN_SPECIAL && !bytes[size_t(id)].empty()) {
                items.push_back({bytes[size_t(id)], id});
                mask_set(usable.data(), id);
            }
        trie = ByteTrie(std::move(items));
    }
};

// A grammar bound to a vocabulary: for each state with byte edges, the tokens allowed whatever lies below its
// frame, and the trie of the suffixes that the stack below must accept (see the section comment). Immutable
// once built; one TokenGrammar serves any number of GrammarMatchers, on any threads.
struct TokenGrammar {
    // The tokens allowed in every context: a bit set (when that is smaller), else a sorted list of them, or
    // (complement) of the usable tokens that are not.
    struct StateMask {
        std::vector<uint32_t> bits;  // (mask words) or empty
        std::vector<int32_t> ids;    // sorted token ids
        bool complement = false;
        ByteTrie suffixes;  // token bytes left after the frame returns mid-token -> the token's id
    };
    Grammar grammar;
    std::shared_ptr<const TokenTrie> vocab;
    std::vector<StateMask> masks;  // (n_states) empty for states without byte edges

    // n_threads: how many threads build the tables (0: one per core, at most 8); each state's walk is separate.
    TokenGrammar(Grammar g, std::shared_ptr<const TokenTrie> v, int n_threads = 0)
        : grammar(std::move(g)), vocab(std::move(v)) {
        if (!vocab) fail("grammar: no vocabulary");
        masks.resize(grammar.states.size());
        if (n_threads <= 0) n_threads = int(std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
        auto work = [this, n_threads](int part) {
            Configs cf(grammar);
            for (size_t q = size_t(part); q < grammar.states.size(); q += size_t(n_threads))
                if (grammar.states[q].bytes) index_state_(int32_t(q), cf);
        };
        std::vector<std::thread> threads;
        std::vector<std::exception_ptr> errors(static_cast<size_t>(n_threads));
        for (int p = 1; p < n_threads; p++)
            threads.emplace_back([&, p] {
                try {
                    work(p);
                } catch (...) {
                    errors[size_t(p)] = std::current_exception();
                }
            });
        try {
            work(0);
        } catch (...) {
            errors[0] = std::current_exception();
        }
        for (std::thread& t : threads) t.join();
        for (auto& e : errors)
            if (e) std::rethrow_exception(e);
    }

  private:
    // Stack sets over the bottom marker (frame 0), interned by content, with their moves by each byte class
    // computed once: a walk of the trie is then one table lookup per node, and the walks from different states
    // share the sets they pass through (a string's content states lead to each other).
    struct Configs {
        GrammarStacks st;
        std::map<std::vector<int32_t>, int32_t> ids;  // content (each stack's states down to the marker) -> id
        std::vector<std::vector<int32_t>> tops;       // (n_configs) the stack tops of each, in st.pool
        std::vector<int32_t> next;  // (n_configs, n_classes) next id << 1 | frame returned; -1: not yet
        std::vector<int32_t> out;

        explicit Configs(const Grammar& g) : st(g) {
            st.push(-1, GrammarStacks::BOTTOM);  // frame 0: the marker
            intern({});                          // config 0: no stack (refused)
        }
        int32_t intern(const std::vector<int32_t>& set) {
            std::vector<std::vector<int32_t>> stacks;
            for (int32_t f : set) {
                stacks.emplace_back();
                for (int32_t x = f; x > 0; x = st.pool[size_t(x)].parent)
                    stacks.back().push_back(st.pool[size_t(x)].state);
            }
            std::sort(stacks.begin(), stacks.end());
            std::vector<int32_t> key;
            for (const auto& s : stacks) key.insert(key.end(), s.begin(), s.end()), key.push_back(-1);
            auto it = ids.find(key);
            if (it != ids.end()) return it->second;
            int32_t id = int32_t(tops.size());
            ids.emplace(std::move(key), id);
            tops.push_back(set);
            next.resize(tops.size() * size_t(st.g->n_classes), -1);
            return id;
        }
        int32_t move(int32_t c, int cls) {
            int32_t& e = next[size_t(c) * st.g->n_classes + cls];
            if (e >= 0) return e;
            st.step(tops[size_t(c)], cls, out);
            auto m = std::find(out.begin(), out.end(), 0);
            bool returned = m != out.end();
            if (returned) out.erase(m);
            int32_t r = intern(out) << 1 | int32_t(returned);
            next[size_t(c) * st.g->n_classes + cls] = r;  // (intern may have moved `next`)
            return r;
        }
    };

    // Walks the vocabulary trie from the stack [q]. Along the current path: cfg[d] is the stack set after d
    // bytes, esc[0 .. n_esc[d]) the depths after which q's frame returned.
    void index_state_(int32_t q, Configs& cf) {
        const ByteTrie& t = vocab->trie;
        size_t D = size_t(t.max_depth) + 1;
        std::vector<int32_t> cfg(D), n_esc(D, 0), esc(D);
        std::vector<uint8_t> path(D);
        std::vector<uint32_t> accepted(size_t(mask_words(vocab->n_vocab)), 0u);
        size_t n_accepted = 0;
        std::vector<std::pair<size_t, int32_t>> suffixes;  // (offset in suffix_text, id); the lengths below
        std::vector<size_t> suffix_len;
        std::string suffix_text;
        auto uncertain = [&](int32_t id, int len, int n) {  // the token path[1..len] with n return points
            for (int k = 0; k < n; k++) {
                suffixes.push_back({suffix_text.size(), id});
                suffix_len.push_back(size_t(len - esc[size_t(k)]));
                suffix_text.append(reinterpret_cast<const char*>(&path[size_t(esc[size_t(k)]) + 1]), suffix_len.back());
            }
        };
        cfg[0] = cf.intern({cf.st.push(q, 0)});
        for (size_t i = 0; i < t.size();) {
            int d = t.depth[i];
            path[size_t(d)] = t.byte[i];
            int32_t e = cf.move(cfg[size_t(d - 1)], grammar.byte_class[t.byte[i]]);
            bool live = e >> 1 != 0, returned = e & 1;
            cfg[size_t(d)] = e >> 1;
            n_esc[size_t(d)] = n_esc[size_t(d - 1)];
            if (returned) esc[size_t(n_esc[size_t(d)]++)] = d;
            for (int32_t k = t.first[i]; k < t.first[i + 1]; k++) {
                if (live || returned)
                    mask_set(accepted.data(), t.ids[size_t(k)]), n_accepted++;
                else
                    uncertain(t.ids[size_t(k)], d, n_esc[size_t(d - 1)]);
            }
            if (!live) {  // every token below returned at one of the esc depths first, or is refused
                if (n_esc[size_t(d)] > 0)
                    for (size_t j = i + 1; j < size_t(t.end[i]); j++) {
                        path[t.depth[j]] = t.byte[j];
                        for (int32_t k = t.first[j]; k < t.first[j + 1]; k++)
                            uncertain(t.ids[size_t(k)], t.depth[j], n_esc[size_t(d)]);
                    }
                i = size_t(t.end[i]);
                continue;
            }
            i++;
        }
        StateMask& out = masks[size_t(q)];
        size_t n_usable = t.ids.size(), words = accepted.size();
        out.complement = n_accepted * 2 > n_usable;
        if (std::min(n_accepted, n_usable - n_accepted) > words) {
            out.bits = std::move(accepted);
        } else {
            const uint32_t* usable = vocab->usable.data();
            for (size_t w = 0; w < words; w++)
                for (uint32_t m = out.complement ? usable[w] & ~accepted[w] : accepted[w]; m; m &= m - 1)
                    out.ids.push_back(int32_t(w * 32 + size_t(__builtin_ctz(m))));
        }
        std::vector<std::pair<std::string_view, int32_t>> items;
        for (size_t k = 0; k < suffixes.size(); k++)
            items.push_back(
                {std::string_view(suffix_text).substr(suffixes[k].first, suffix_len[k]), suffixes[k].second});
        out.suffixes = ByteTrie(std::move(items));
    }
};

// Builds the tables of a grammar for a vocabulary (the cost is paid once per grammar; share the result).
inline std::shared_ptr<const TokenGrammar> bind_grammar(Grammar g, std::shared_ptr<const TokenTrie> vocab,
                                                        int n_threads = 0) {
    return std::make_shared<const TokenGrammar>(std::move(g), std::move(vocab), n_threads);
}

// One sequence's position in a grammar: which tokens may come next, and the move by the chosen one.
struct GrammarMatcher {
    explicit GrammarMatcher(std::shared_ptr<const TokenGrammar> g) : tg_(std::move(g)), st_(tg_->grammar) { reset(); }
    void reset() {
        st_.pool.clear();
        st_.start(set_);
        compact_at_ = 4096;
    }
    int n_vocab() const { return tg_->vocab->n_vocab; }
    // The text so far is a complete sentence (the stop ids may come now).
    bool accepts_end() const { return std::find(set_.begin(), set_.end(), GrammarStacks::DONE) != set_.end(); }
    // Complete, and no byte can follow: generation is over.
    bool finished() const { return set_.size() == 1 && set_[0] == GrammarStacks::DONE; }
    size_t frames() const { return st_.pool.size(); }  // stack frames held (memory use)

    // mask: mask_words(n_vocab()) words; bit id is set when token id may come next. Stop ids are not set (see
    // accepts_end). Cost: a copy or a list per stack, plus the walk of its state's (small) suffix trie.
    void allowed(uint32_t* mask) {
        const TokenTrie& v = *tg_->vocab;
        size_t words = size_t(mask_words(v.n_vocab));
        std::fill(mask, mask + words, 0u);
        bool empty = true;
        for (int32_t f : set_) {
            if (f < 0) continue;
            const TokenGrammar::StateMask& m = tg_->masks[size_t(st_.pool[size_t(f)].state)];
            if (!m.bits.empty()) {
                for (size_t w = 0; w < words; w++) mask[w] |= m.bits[w];
            } else if (m.complement) {
                buf_.resize(words);
                uint32_t* dst = empty ? mask : buf_.data();
                std::copy(v.usable.begin(), v.usable.end(), dst);
                for (int32_t id : m.ids) dst[id >> 5] &= ~(1u << (id & 31));
                if (!empty)
                    for (size_t w = 0; w < words; w++) mask[w] |= dst[w];
            } else {
                for (int32_t id : m.ids) mask_set(mask, id);
            }
            empty = false;
            if (m.suffixes.size()) allow_suffixes_(f, m.suffixes, mask);
        }
    }
    // Consumes token id; false (and no change) when the grammar does not allow it here.
    bool advance(int id) {
        const TokenTrie& v = *tg_->vocab;
        if (id < 0 || id >= v.n_vocab || !mask_test(v.usable.data(), id)) return false;
        return advance_bytes(v.bytes[size_t(id)]);
    }
    // Consumes bytes (of one token or several); false (and no change) when the grammar refuses them.
    bool advance_bytes(const std::string& s) {
        size_t mark = st_.pool.size();
        if (!step_bytes_(s)) {
            st_.pool.resize(mark);
            return false;
        }
        set_.swap(tmp_);
        if (st_.pool.size() > compact_at_) compact_();
        return true;
    }
    // Whether advance_bytes(s) would succeed, without moving (the tests' oracle: one token at a time).
    bool would_accept(const std::string& s) {
        size_t mark = st_.pool.size();
        bool ok = step_bytes_(s);
        st_.pool.resize(mark);
        return ok;
    }

  private:
    std::shared_ptr<const TokenGrammar> tg_;
    GrammarStacks st_;
    std::vector<int32_t> set_, tmp_, tmp2_;  // the current stacks; scratch
    std::vector<uint32_t> buf_;
    std::vector<std::vector<int32_t>> sets_;  // suffix walks: the stacks after d bytes
    std::vector<size_t> marks_;
    size_t compact_at_ = 4096;

    bool step_bytes_(const std::string& s) {  // tmp_ = the stacks after s (frames added to the pool)
        tmp_ = set_;
        for (char c : s) {
            st_.step(tmp_, tg_->grammar.byte_class[uint8_t(c)], tmp2_);
            if (tmp2_.empty()) return false;
            tmp_.swap(tmp2_);
        }
        return true;
    }
    // Adds the tokens of a suffix trie whose suffix the stack below frame f accepts.
    void allow_suffixes_(int32_t f, const ByteTrie& t, uint32_t* mask) {
        size_t D = size_t(t.max_depth) + 1;
        if (sets_.size() < D) sets_.resize(D), marks_.resize(D);
        size_t mark = st_.pool.size();
        sets_[0].clear();
        st_.begin_closure();
        st_.close(st_.pool[size_t(f)].parent, sets_[0]);
        marks_[0] = st_.pool.size();
        for (size_t i = 0; i < t.size();) {
            int d = t.depth[i];
            st_.pool.resize(marks_[size_t(d - 1)]);
            st_.step(sets_[size_t(d - 1)], tg_->grammar.byte_class[t.byte[i]], sets_[size_t(d)]);
            if (sets_[size_t(d)].empty()) {
                i = size_t(t.end[i]);
                continue;
            }
            for (int32_t k = t.first[i]; k < t.first[i + 1]; k++) mask_set(mask, t.ids[size_t(k)]);
            marks_[size_t(d)] = st_.pool.size();
            i++;
        }
        st_.pool.resize(mark);
    }
    // Copies the frames the current stacks use into a fresh pool (the rest is garbage of earlier steps).
    void compact_() {
        std::vector<int32_t> remap(st_.pool.size(), -1), chain;
        std::vector<GrammarStacks::Frame> pool;
        for (int32_t& f : set_) {
            if (f < 0) continue;
            chain.clear();
            for (int32_t x = f; x >= 0 && remap[size_t(x)] < 0; x = st_.pool[size_t(x)].parent) chain.push_back(x);
            for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
                GrammarStacks::Frame fr = st_.pool[size_t(*it)];
                pool.push_back({fr.state, fr.parent >= 0 ? remap[size_t(fr.parent)] : fr.parent});
                remap[size_t(*it)] = int32_t(pool.size()) - 1;
            }
            f = remap[size_t(f)];
        }
        st_.pool.swap(pool);
        compact_at_ = 2 * st_.pool.size() + 4096;
    }
};

// ----------------------------------------------------------------------------
// JSON: a strict reader for schemas (RFC 8259, nesting depth <= 64) and the canonical writer
// ----------------------------------------------------------------------------

struct JsonValue {
    enum Type : uint8_t { NUL, BOOL, NUMBER, STRING, ARRAY, OBJECT };
    Type type = NUL;
    bool boolean = false;
    std::string text;                                        // STRING: the decoded UTF-8; NUMBER: as written
    std::vector<JsonValue> items;                            // ARRAY
    std::vector<std::pair<std::string, JsonValue>> members;  // OBJECT, in order (no duplicate keys)

    const JsonValue* get(const std::string& key) const {
        for (const auto& m : members)
            if (m.first == key) return &m.second;
        return nullptr;
    }
};

struct JsonReader {
    const std::string& s;
    const char* what;  // names the input in errors
    size_t pos = 0;

    [[noreturn]] void error(const std::string& msg) const {
        auto [line, col] = line_col(s, pos);
        fail("%s: line %d col %d: %s", what, line, col, msg.c_str());
    }
    void ws() {
        while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n' || s[pos] == '\r')) pos++;
    }
    bool eat(const char* word) {
        size_t n = strlen(word);
        if (s.compare(pos, n, word) != 0) return false;
        pos += n;
        return true;
    }
    uint32_t hex4() {
        uint32_t v = 0;
        for (int i = 0; i < 4; i++, pos++) {
            char c = pos < s.size() ? s[pos] : '\0';
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0) error("expected 4 hex digits after \\u");
            v = v * 16 + uint32_t(d);
        }
        return v;
    }
    std::string string() {
        pos++;  // the opening quote
        std::string out;
        for (;;) {
            if (pos >= s.size()) error("unterminated string");
            uint8_t c = uint8_t(s[pos]);
            if (c == '"') break;
            if (c < 0x20) error("control character in a string (escape it)");
            if (c >= 0x80) {
                uint32_t cp;
                int len = utf8_decode(reinterpret_cast<const uint8_t*>(s.data()) + pos, s.size() - pos, &cp);
                if (len <= 0) error("invalid UTF-8");
                out.append(s, pos, size_t(len));
                pos += size_t(len);
                continue;
            }
            pos++;
            if (c != '\\') {
                out += char(c);
                continue;
            }
            char e = pos < s.size() ? s[pos++] : '\0';
            const char* from = "\"\\/bfnrt";
            const char* to = "\"\\/\b\f\n\r\t";
            const char* hit = e ? strchr(from, e) : nullptr;
            if (hit) {
                out += to[hit - from];
                continue;
            }
            if (e != 'u') error("invalid escape in a string");
            uint32_t cp = hex4();
            if (cp >= 0xD800 && cp <= 0xDBFF && eat("\\u")) {
                uint32_t lo = hex4();
                if (lo < 0xDC00 || lo > 0xDFFF) error("invalid surrogate pair");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                error("unpaired surrogate in a \\u escape");
            }
            utf8_append(out, cp);
        }
        pos++;
        return out;
    }
    std::string number() {
        size_t b = pos;
        auto digits = [&] {
            size_t d = pos;
            while (pos < s.size() && std::isdigit(uint8_t(s[pos]))) pos++;
            return pos - d;
        };
        if (s[pos] == '-') pos++;
        if (pos < s.size() && s[pos] == '0')
            pos++;
        else if (digits() == 0)
            error("invalid number");
        if (pos < s.size() && s[pos] == '.' && (pos++, digits() == 0)) error("invalid number: no digits after '.'");
        if (pos < s.size() && (s[pos] == 'e' || s[pos] == 'E')) {
            pos++;
            if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) pos++;
            if (digits() == 0) error("invalid number: no digits in the exponent");
        }
        return s.substr(b, pos - b);
    }
    JsonValue value(int depth) {
        ws();
        if (pos >= s.size()) error("unexpected end of input");
        JsonValue v;
        char c = s[pos];
        if ((c == '{' || c == '[') && depth >= GRAMMAR_MAX_NESTING)
            error(sformat("nested deeper than %d", GRAMMAR_MAX_NESTING));
        if (c == '{') {
            v.type = JsonValue::OBJECT;
            pos++;
            ws();
            if (pos < s.size() && s[pos] == '}') return pos++, v;
            for (;;) {
                ws();
                if (pos >= s.size() || s[pos] != '"') error("expected a string key");
                size_t at = pos;
                std::string key = string();
                if (v.get(key)) pos = at, error("duplicate key \"" + key + "\"");
                ws();
                if (!eat(":")) error("expected ':'");
                JsonValue item = value(depth + 1);
                v.members.emplace_back(std::move(key), std::move(item));
                ws();
                if (eat("}")) return v;
                if (!eat(",")) error("expected ',' or '}'");
            }
        }
        if (c == '[') {
            v.type = JsonValue::ARRAY;
            pos++;
            ws();
            if (pos < s.size() && s[pos] == ']') return pos++, v;
            for (;;) {
                v.items.push_back(value(depth + 1));
                ws();
                if (eat("]")) return v;
                if (!eat(",")) error("expected ',' or ']'");
            }
        }
        if (c == '"') {
            v.type = JsonValue::STRING;
            v.text = string();
        } else if (c == '-' || std::isdigit(uint8_t(c))) {
            v.type = JsonValue::NUMBER;
            v.text = number();
        } else if (eat("true") || eat("false")) {
            v.type = JsonValue::BOOL;
            v.boolean = c == 't';
        } else if (!eat("null")) {
            error(std::isprint(uint8_t(c)) ? sformat("unexpected '%c'", c) : "unexpected byte");
        }
        return v;
    }
};

// Parses one JSON document; errors name `what` with the line and column.
inline JsonValue parse_json(const std::string& text, const char* what = "JSON") {
    JsonReader r{text, what};
    JsonValue v = r.value(0);
    r.ws();
    if (r.pos != text.size()) r.error("unexpected data after the JSON value");
    return v;
}

// s as a JSON string literal: quotes, backslashes and control characters escaped, everything else as is.
inline void json_quote(std::string& out, const std::string& s) {
    out += '"';
    for (char c : s) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\b':
                out += "\\b";
                break;
            case '\f':
                out += "\\f";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (uint8_t(c) < 0x20)
                    out += sformat("\\u%04x", unsigned(uint8_t(c)));
                else
                    out += c;
        }
    }
    out += '"';
}

// Compact JSON text of a value (no spaces), as a generated const or enum value is written.
inline std::string json_dump(const JsonValue& v) {
    std::string out;
    switch (v.type) {
        case JsonValue::NUL:
            return "null";
        case JsonValue::BOOL:
            return v.boolean ? "true" : "false";
        case JsonValue::NUMBER:
            return v.text;
        case JsonValue::STRING:
            json_quote(out, v.text);
            return out;
        case JsonValue::ARRAY:
            out = "[";
            for (size_t i = 0; i < v.items.size(); i++) out += (i ? "," : "") + json_dump(v.items[i]);
            return out + "]";
        case JsonValue::OBJECT:
            out = "{";
            for (size_t i = 0; i < v.members.size(); i++) {
                if (i) out += ",";
                json_quote(out, v.members[i].first);
                out += ":" + json_dump(v.members[i].second);
            }
            return out + "}";
    }
    return out;
}

// A JSON number as Python's json.dumps writes the value json.loads reads from it: an integer as it is (-0 as 0),
// any other number as repr(float): the fewest significant digits that read back as the same double, in fixed
// notation when the decimal exponent is -4..15 (1e-05, 0.0001, 1e+16, 1000000000000000.0, 2.5).
inline std::string python_number(const std::string& text) {
    if (text.find_first_of(".eE") == std::string::npos) return text == "-0" ? "0" : text;
    double v = strtod(text.c_str(), nullptr);
    if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
    char buf[40];
    for (int prec = 0; prec <= 17; prec++) {  // "-d.ddde-XX": the shortest that round-trips
        snprintf(buf, sizeof buf, "%.*e", prec, v);
        if (strtod(buf, nullptr) == v) break;
    }
    std::string m = buf, sign;
    if (m[0] == '-') sign = "-", m.erase(0, 1);
    size_t e = m.find('e');
    int exp = atoi(m.c_str() + e + 1);
    std::string digits = m.substr(0, 1) + (e > 2 ? m.substr(2, e - 2) : "");
    while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
    int point = exp + 1;  // digits d1 d2 ... with the decimal point after `point` of them
    if (point > -4 && point <= 16) {
        if (point <= 0) return sign + "0." + std::string(size_t(-point), '0') + digits;
        if (size_t(point) >= digits.size())
            return sign + digits + std::string(size_t(point) - digits.size(), '0') + ".0";
        return sign + digits.substr(0, size_t(point)) + "." + digits.substr(size_t(point));
    }
    std::string mant = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
    return sign + mant + sformat("e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
}

// A value as Python's json.dumps(value, ensure_ascii=False) writes it (the chat templates' tojson).
inline std::string python_json_dump(const JsonValue& v) {
    std::string out;
    switch (v.type) {
        case JsonValue::NUMBER:
            return python_number(v.text);
        case JsonValue::ARRAY:
            out = "[";
            for (size_t i = 0; i < v.items.size(); i++) out += (i ? ", " : "") + python_json_dump(v.items[i]);
            return out + "]";
        case JsonValue::OBJECT:
            out = "{";
            for (size_t i = 0; i < v.members.size(); i++) {
                if (i) out += ", ";
                json_quote(out, v.members[i].first);
                out += ": " + python_json_dump(v.members[i].second);
            }
            return out + "}";
        default:
            return json_dump(v);
    }
}

inline std::string python_json(const std::string& json_text) { return python_json_dump(parse_json(json_text)); }

// ----------------------------------------------------------------------------
// Writing GBNF: literals and classes; regex -> GBNF
// ----------------------------------------------------------------------------

// A code point as written inside "..." or [...] of GBNF.
inline std::string gbnf_char(uint32_t cp) {
    if (cp >= 0x20 && cp < 0x7F && !strchr("\"\\[]^-", int(cp))) return std::string(1, char(cp));
    if (cp >= 0xA0) {
        std::string s;
        utf8_append(s, cp);
        return s;
    }
    return sformat(cp < 0x10000 ? "\\u%04X" : "\\U%08X", cp);
}

// A GBNF literal matching exactly the UTF-8 text s (s must be valid UTF-8).
inline std::string gbnf_literal(const std::string& s) {
    std::string out = "\"";
    for (uint32_t cp : utf8_to_code_points(s)) out += gbnf_char(cp);
    return out + "\"";
}

// A GBNF class (or a literal for one character) of a normalised, non-empty set.
inline std::string gbnf_class(const CodeRanges& r) {
    if (r.size() == 1 && r[0].first == r[0].second) return "\"" + gbnf_char(r[0].first) + "\"";
    std::string out = "[";
    for (auto [lo, hi] : r) out += lo == hi ? gbnf_char(lo) : gbnf_char(lo) + "-" + gbnf_char(hi);
    return out + "]";
}

// GBNF for one character of set r as it is written inside a JSON string: itself, or for '"', '\' and the
// control characters their escape (\" \\ \n ... \u001f), so the decoded string holds exactly r's characters.
inline std::string gbnf_json_chars(const CodeRanges& r) {
    static const CodeRanges kEscaped = {{0, 0x1F}, {'"', '"'}, {'\\', '\\'}};
    std::vector<std::string> alts;
    CodeRanges plain = intersect_ranges(r, complement_ranges(kEscaped));
    if (!plain.empty()) alts.push_back(gbnf_class(plain));
    for (auto [lo, hi] : kEscaped)
        for (uint32_t cp = lo; cp <= hi; cp++)
            if (in_code_ranges(r, cp)) {
                std::string esc;
                json_quote(esc, std::string(1, char(cp)));
                alts.push_back(gbnf_literal(esc.substr(1, esc.size() - 2)));
            }
    if (alts.size() == 1) return alts[0];
    std::string out = "(";
    for (size_t i = 0; i < alts.size(); i++) out += (i ? " | " : "") + alts[i];
    return out + ")";
}

// Regular expressions (the ECMAScript subset that JSON Schema patterns and vLLM's guided_regex use) to GBNF:
// literals, . (any character but line breaks), classes [a-z] [^...], \d \w \s and their negations (ASCII
// meanings), escapes \n \t \xHH \uHHHH \u{H...}, groups ( ) (?: ) (?<name> ), |, * + ? {m} {m,} {m,n} (lazy ?
// ignored: same language), ^ at the start and $ at the end. Back-references, lookaround and \b are refused.
struct RegexToGbnf {
    const std::string& re;
    bool json;  // each character as written inside a JSON string (gbnf_json_chars)
    size_t pos = 0;

    [[noreturn]] void error(const std::string& msg) const { fail("regex: at offset %zu: %s", pos, msg.c_str()); }
    bool eof() const { return pos >= re.size(); }
    char peek() const { return eof() ? '\0' : re[pos]; }
    std::string chars(const CodeRanges& r) const {
        if (r.empty()) error("empty character class");
        return json ? gbnf_json_chars(r) : gbnf_class(r);
    }
    uint32_t hex(size_t n) {
        uint32_t v = 0;
        for (size_t i = 0; i < n; i++, pos++) {
            char c = peek();
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0) error("bad hex escape");
            v = v * 16 + uint32_t(d);
        }
        return v;
    }
    // After a backslash: a class escape (\d \w \s, negated by upper case) or one character.
    CodeRanges escape() {
        if (eof()) error("pattern ends with a backslash");
        char c = re[pos++];
        static const CodeRanges kDigit = {{'0', '9'}}, kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}},
                                kSpace = {{'\t', '\r'}, {' ', ' '}};
        switch (c) {
            case 'd':
                return kDigit;
            case 'D':
                return complement_ranges(kDigit);
            case 'w':
                return kWord;
            case 'W':
                return complement_ranges(kWord);
            case 's':
                return kSpace;
            case 'S':
                return complement_ranges(kSpace);
            case 'n':
                return {{'\n', '\n'}};
            case 'r':
                return {{'\r', '\r'}};
            case 't':
                return {{'\t', '\t'}};
            case 'f':
                return {{'\f', '\f'}};
            case 'v':
                return {{'\v', '\v'}};
            case '0':
                return {{0, 0}};
            case 'x': {
                uint32_t v = hex(2);
                return {{v, v}};
            }
            case 'u': {
                uint32_t v;
                if (peek() == '{') {
                    pos++;
                    size_t b = pos;
                    while (std::isxdigit(uint8_t(peek()))) pos++;
                    if (pos == b || pos - b > 6 || peek() != '}') error("bad \\u{...} escape");
                    size_t end = pos;
                    pos = b;
                    v = hex(end - b);
                    pos++;
                } else {
                    v = hex(4);
                }
                if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) error("escape is not a Unicode scalar value");
                return {{v, v}};
            }
            case 'b':
            case 'B':
                error("word boundaries (\\b, \\B) are not supported");
            default:
                if (std::isdigit(uint8_t(c))) error("back-references are not supported");
                if (std::isalnum(uint8_t(c))) error(sformat("unknown escape '\\%c'", c));
                return {{uint8_t(c), uint8_t(c)}};
        }
    }
    uint32_t literal_char() {
        uint32_t cp = 0;
        int len = utf8_decode(reinterpret_cast<const uint8_t*>(re.data()) + pos, re.size() - pos, &cp);
        if (len <= 0) error("invalid UTF-8");
        pos += size_t(len);
        return cp;
    }
    std::string char_class() {
        pos++;
        bool negate = peek() == '^';
        if (negate) pos++;
        CodeRanges r;
        for (;;) {  // as in ECMAScript, ']' always closes: [] is empty, [^] is any character
            if (eof()) error("unterminated character class");
            if (re[pos] == ']') break;
            CodeRanges item;
            if (re[pos] == '\\')
                pos++, item = escape();
            else {
                uint32_t c = literal_char();
                item = {{c, c}};
            }
            if (item.size() == 1 && item[0].first == item[0].second && peek() == '-' && pos + 1 < re.size() &&
                re[pos + 1] != ']') {
                pos++;
                CodeRanges hi;
                if (re[pos] == '\\')
                    pos++, hi = escape();
                else {
                    uint32_t c = literal_char();
                    hi = {{c, c}};
                }
                if (hi.size() != 1 || hi[0].first != hi[0].second || hi[0].first < item[0].first)
                    error("bad range in a character class");
                item[0].second = hi[0].first;
            }
            r.insert(r.end(), item.begin(), item.end());
        }
        pos++;
        r = normalize_ranges(r);
        return chars(negate ? complement_ranges(r) : r);
    }
    int count() {
        if (!std::isdigit(uint8_t(peek()))) error("expected a number in { }");
        long v = 0;
        while (std::isdigit(uint8_t(peek()))) {
            v = v * 10 + (re[pos++] - '0');
            if (v > GRAMMAR_MAX_COUNT) error(sformat("repetition count above %d", GRAMMAR_MAX_COUNT));
        }
        return int(v);
    }
    std::string atom(int depth) {
        char c = peek();
        if (c == '(') {
            if (depth >= GRAMMAR_MAX_NESTING) error(sformat("groups nested deeper than %d", GRAMMAR_MAX_NESTING));
            pos++;
            if (peek() == '?') {
                pos++;
                if (peek() == ':')
                    pos++;
                else if ((peek() == '<' || peek() == 'P') && re.compare(pos, 2, "<=") != 0 &&
                         re.compare(pos, 2, "<!") != 0) {
                    size_t close = re.find('>', pos);
                    if (close == std::string::npos) error("unterminated group name");
                    pos = close + 1;
                } else {
                    error("lookaround and inline flags are not supported");
                }
            }
            std::string inner = alternatives(depth + 1);
            if (peek() != ')') error("'(' is not closed");
            pos++;
            return "(" + inner + ")";
        }
        if (c == '[') return char_class();
        if (c == '.') {
            pos++;
            return chars(complement_ranges({{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}}));
        }
        if (c == '\\') {
            pos++;
            return chars(escape());
        }
        if (c == '^' || c == '$') error("anchors are supported only at the start (^) and the end ($)");
        if (c == '*' || c == '+' || c == '?' || c == '{') error("nothing to repeat");
        if (c == ')') error("unmatched ')'");
        uint32_t cp = literal_char();
        return chars({{cp, cp}});
    }
    std::string sequence(int depth) {
        std::string out;
        while (!eof() && peek() != '|' && peek() != ')') {
            if (peek() == '$' && pos + 1 == re.size()) {  // the end anchor: a full match is what we make anyway
                pos++;
                break;
            }
            std::string a = atom(depth);
            char q = peek();
            if (q == '*' || q == '+' || q == '?') {
                pos++;
                a += q;
            } else if (q == '{') {
                pos++;
                int lo = peek() == ',' ? 0 : count(), hi = lo;
                if (peek() == ',') pos++, hi = peek() == '}' ? -1 : count();
                if (peek() != '}') error("expected '}'");
                pos++;
                if (hi >= 0 && hi < lo) error("repetition {m,n} with n < m");
                a += hi < 0 ? sformat("{%d,}", lo) : sformat("{%d,%d}", lo, hi);
            }
            if (q == '*' || q == '+' || q == '?' || q == '{') {
                if (peek() == '?') pos++;  // lazy: the same language
                if (peek() == '*' || peek() == '+' || peek() == '?' || peek() == '{')
                    error("a repetition of a repetition");
            }
            out += (out.empty() ? "" : " ") + a;
        }
        return out.empty() ? "\"\"" : out;
    }
    std::string alternatives(int depth) {
        std::string out = sequence(depth);
        while (peek() == '|') {
            pos++;
            out += " | " + sequence(depth);
        }
        return out;
    }
    std::string convert() {
        if (re.size() > GRAMMAR_MAX_TEXT) fail("regex: longer than %zu bytes", GRAMMAR_MAX_TEXT);
        if (peek() == '^') pos++;
        std::string out = alternatives(0);
        if (!eof()) error("unmatched ')'");
        return "(" + out + ")";
    }
};

// A GBNF expression for the strings that fully match `regex` (json: as written inside a JSON string).
inline std::string regex_to_gbnf(const std::string& regex, bool json = false) {
    return RegexToGbnf{regex, json}.convert();
}

// ----------------------------------------------------------------------------
// JSON Schema -> GBNF
// ----------------------------------------------------------------------------

// The JSON text the schema grammars are built from: whitespace as models write it (nothing, one space or tab,
// or a line break and an indent of up to 24), strings without unpaired surrogate escapes (so each escape is one
// character and lengths count right), numbers as RFC 8259 writes them with at most 16 integer digits, 16
// fraction digits and 3 exponent digits (a double holds 17 significant digits; longer runs are a model stuck).
inline const char* json_base_gbnf() {
    return R"GBNF(ws ::= [ \t]? | "\n" [ \t]{0,24}
json-char ::= [^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" ([0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}))
json-string ::= "\"" json-char* "\""
json-int ::= "-"? ("0" | [1-9] [0-9]{0,15})
json-number ::= json-int ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?
json-value ::= json-object | json-array | json-string | json-number | "true" | "false" | "null"
json-object ::= "{" ws (json-string ":" ws json-value ("," ws json-string ":" ws json-value)* ws)? "}"
json-array ::= "[" ws (json-value ("," ws json-value)* ws)? "]"
)GBNF";
}

// GBNF for the decimal integers in [lo, hi]; lo_open / hi_open: no bound on that side.
inline std::string int_range_gbnf(int64_t lo, int64_t hi, bool lo_open, bool hi_open) {
    // Fixed-length digit strings x..y (same length): a common first digit, or x's first digit with the rest up
    // to 9..9, the full blocks between, and y's first digit with the rest from 0..0.
    std::function<std::string(const std::string&, const std::string&)> same_len = [&](const std::string& x,
                                                                                      const std::string& y) {
        if (x.size() == 1) return x == y ? "\"" + x + "\"" : "[" + x + "-" + y + "]";
        std::string xr = x.substr(1), yr = y.substr(1);
        if (x[0] == y[0]) return "\"" + x.substr(0, 1) + "\" " + same_len(xr, yr);
        std::vector<std::string> alts;
        char lo_d = x[0], hi_d = y[0];
        if (xr.find_first_not_of('0') != std::string::npos)
            alts.push_back("\"" + x.substr(0, 1) + "\" (" + same_len(xr, std::string(xr.size(), '9')) + ")"), lo_d++;
        std::string hi_alt;
        if (yr.find_first_not_of('9') != std::string::npos)
            hi_alt = "\"" + y.substr(0, 1) + "\" (" + same_len(std::string(yr.size(), '0'), yr) + ")", hi_d--;
        if (lo_d <= hi_d) alts.push_back(sformat("[%c-%c] [0-9]{%zu}", lo_d, hi_d, xr.size()));
        if (!hi_alt.empty()) alts.push_back(hi_alt);
        std::string out;
        for (size_t i = 0; i < alts.size(); i++) out += (i ? " | " : "") + alts[i];
        return alts.size() == 1 ? out : "(" + out + ")";
    };
    auto pow10 = [](size_t n) {
        uint64_t p = 1;
        while (n--) p *= 10;
        return p;
    };
    // The non-negative integers a..b (b_open: a and up), without leading zeros.
    auto non_negative = [&](uint64_t a, uint64_t b, bool b_open) {
        std::vector<std::string> alts;
        size_t da = std::to_string(a).size(), db = b_open ? da : std::to_string(b).size();
        for (size_t len = da; len <= db; len++) {
            uint64_t l = len == da ? a : pow10(len - 1), h = len == db && !b_open ? b : pow10(len) - 1;
            alts.push_back(same_len(std::to_string(l), std::to_string(h)));
        }
        if (b_open && da < 16) alts.push_back(sformat("[1-9] [0-9]{%zu,15}", da));  // 16 digits at most
        std::string out;
        for (size_t i = 0; i < alts.size(); i++) out += (i ? " | " : "") + alts[i];
        return "(" + out + ")";
    };
    std::vector<std::string> alts;
    if (lo_open || lo < 0) {  // negatives: "-" and the magnitudes max(1, -hi) .. -lo
        uint64_t from = !hi_open && hi < 0 ? uint64_t(-(hi + 1)) + 1 : 1;
        alts.push_back("\"-\" " + non_negative(from, lo_open ? 0 : uint64_t(-(lo + 1)) + 1, lo_open));
    }
    if (hi_open || hi >= 0)
        alts.push_back(non_negative(lo_open || lo < 0 ? 0 : uint64_t(lo), hi_open ? 0 : uint64_t(hi), hi_open));
    std::string out;
    for (size_t i = 0; i < alts.size(); i++) out += (i ? " | " : "") + alts[i];
    return "(" + out + ")";
}

// JSON Schema (the subset OpenAI's strict mode accepts, and a little more) to GBNF. Objects: properties (written
// in the schema's order; the ones not in `required` may be left out), required, additionalProperties (false, or
// absent: no other keys; without properties, true or a schema: any keys). Strings: enum, const, pattern (see
// RegexToGbnf; unanchored means "contains"), minLength, maxLength, format (date, time, date-time, uuid).
// integer: minimum, maximum, exclusiveMinimum, exclusiveMaximum; number: minimum 0 / exclusiveMinimum 0.
// boolean, null; array: items, minItems, maxItems; anyOf, allOf of one schema, $ref to #, #/$defs/..,
// #/definitions/.. (recursion allowed); type lists. Annotations (title, description, default, examples...) are
// ignored. Anything else is refused with the keyword and its place (a JSON pointer), never ignored.
struct SchemaToGbnf {
    const JsonValue& root;
    std::string rules;                                      // the rules written so far
    std::unordered_map<std::string, std::string> refs;      // JSON pointer -> its rule
    std::vector<std::pair<std::string, std::string>> todo;  // ($ref rule, pointer) to write
    int n_rules = 0;

    [[noreturn]] static void error(const std::string& path, const std::string& msg) {
        fail("json schema: %s: %s", path.empty() ? "(root)" : path.c_str(), msg.c_str());
    }
    std::string rule(const std::string& hint, const std::string& body) {
        std::string name = hint + "-" + std::to_string(n_rules++);
        rules += name + " ::= " + body + "\n";
        return name;
    }
    static std::string pointer_escape(const std::string& s) {
        std::string out;
        for (char c : s) out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
        return out;
    }
    static std::string alternatives(const std::vector<std::string>& alts) {
        if (alts.size() == 1) return alts[0];
        std::string out = "(";
        for (size_t i = 0; i < alts.size(); i++) out += (i ? " | " : "") + alts[i];
        return out + ")";
    }
    static double number_of(const JsonValue& v, const std::string& path) {
        if (v.type != JsonValue::NUMBER) error(path, "expected a number");
        return strtod(v.text.c_str(), nullptr);
    }
    static int count_of(const JsonValue* v, const std::string& path, int dflt) {
        if (!v) return dflt;
        double d = number_of(*v, path);
        if (!(d >= 0 && d <= GRAMMAR_MAX_COUNT) || d != std::floor(d))
            error(path, sformat("expected an integer in 0..%d", GRAMMAR_MAX_COUNT));
        return int(d);
    }

    std::string ref(const std::string& target, const std::string& path) {
        if (target != "#" && target.compare(0, 2, "#/") != 0) error(path, "only local $ref (#, #/...) is supported");
        std::string pointer = target.substr(1);
        auto it = refs.find(pointer);
        if (it != refs.end()) return it->second;
        resolve(pointer, path);
        std::string hint = "ref";
        for (char c : pointer.substr(pointer.rfind('/') + 1)) hint += std::isalnum(uint8_t(c)) ? c : '-';
        std::string name = hint.substr(0, 40) + "-" + std::to_string(n_rules++);
        refs[pointer] = name;
        todo.push_back({name, pointer});
        return name;
    }
    const JsonValue& resolve(const std::string& pointer, const std::string& path) const {
        const JsonValue* v = &root;
        for (size_t i = 0; i < pointer.size();) {  // "/a/b~1c": segments after each '/'
            size_t j = pointer.find('/', i + 1);
            if (j == std::string::npos) j = pointer.size();
            std::string seg;
            for (size_t k = i + 1; k < j; k++) {
                if (pointer[k] == '~' && k + 1 < j && (pointer[k + 1] == '0' || pointer[k + 1] == '1'))
                    seg += pointer[++k] == '0' ? '~' : '/';
                else
                    seg += pointer[k];
            }
            const JsonValue* next = nullptr;
            if (v->type == JsonValue::OBJECT)
                next = v->get(seg);
            else if (v->type == JsonValue::ARRAY && !seg.empty() &&
                     seg.find_first_not_of("0123456789") == std::string::npos && seg.size() < 9 &&
                     size_t(std::stoul(seg)) < v->items.size())
                next = &v->items[std::stoul(seg)];
            if (!next) error(path, "$ref '#" + pointer + "' does not resolve");
            v = next;
            i = j;
        }
        return *v;
    }

    std::string visit(const JsonValue& s, const std::string& path) {
        if (s.type == JsonValue::BOOL) {
            if (!s.boolean) error(path, "the schema false accepts nothing");
            return "json-value";
        }
        if (s.type != JsonValue::OBJECT) error(path, "a schema must be an object or a boolean");
        static const char* kKnown[] = {"type",
                                       "properties",
                                       "required",
                                       "additionalProperties",
                                       "items",
                                       "minItems",
                                       "maxItems",
                                       "enum",
                                       "const",
                                       "anyOf",
                                       "allOf",
                                       "$ref",
                                       "$defs",
                                       "definitions",
                                       "pattern",
                                       "minLength",
                                       "maxLength",
                                       "format",
                                       "minimum",
                                       "maximum",
                                       "exclusiveMinimum",
                                       "exclusiveMaximum",
                                       "title",
                                       "description",
                                       "$comment",
                                       "$schema",
                                       "$id",
                                       "default",
                                       "examples",
                                       "deprecated",
                                       "readOnly",
                                       "writeOnly"};
        for (const auto& m : s.members)
            if (std::find_if(std::begin(kKnown), std::end(kKnown), [&](const char* k) { return m.first == k; }) ==
                std::end(kKnown))
                error(path, "unsupported keyword '" + m.first + "'");
        if (const JsonValue* r = s.get("$ref")) {
            if (r->type != JsonValue::STRING) error(path + "/$ref", "expected a string");
            return ref(r->text, path + "/$ref");
        }
        if (const JsonValue* c = s.get("const")) return gbnf_literal(json_dump(*c));
        if (const JsonValue* e = s.get("enum")) {
            if (e->type != JsonValue::ARRAY || e->items.empty()) error(path + "/enum", "expected a non-empty array");
            std::vector<std::string> alts;
            for (const JsonValue& v : e->items) alts.push_back(gbnf_literal(json_dump(v)));
            return alternatives(alts);
        }
        for (const char* key : {"anyOf", "allOf"})
            if (const JsonValue* a = s.get(key)) {
                if (a->type != JsonValue::ARRAY || a->items.empty())
                    error(path + "/" + key, "expected a non-empty array");
                if (key[1] == 'l' && a->items.size() > 1)
                    error(path, "allOf with more than one schema is not supported");
                std::vector<std::string> alts;
                for (size_t i = 0; i < a->items.size(); i++)
                    alts.push_back(visit(a->items[i], path + "/" + key + "/" + std::to_string(i)));
                return alternatives(alts);
            }
        const JsonValue* t = s.get("type");
        if (!t) {  // the type the keywords imply, else any value
            for (const char* k : {"properties", "required", "additionalProperties"})
                if (s.get(k)) return object(s, path);
            for (const char* k : {"items", "minItems", "maxItems"})
                if (s.get(k)) return array(s, path);
            for (const char* k : {"pattern", "minLength", "maxLength", "format"})
                if (s.get(k)) return string(s, path);
            return "json-value";
        }
        if (t->type == JsonValue::STRING) return typed(t->text, s, path);
        if (t->type != JsonValue::ARRAY || t->items.empty())
            error(path + "/type", "expected a type name or a list of them");
        std::vector<std::string> alts;
        for (const JsonValue& name : t->items) {
            if (name.type != JsonValue::STRING) error(path + "/type", "expected a type name");
            alts.push_back(typed(name.text, s, path));
        }
        return alternatives(alts);
    }
    std::string typed(const std::string& type, const JsonValue& s, const std::string& path) {
        if (type == "object") return object(s, path);
        if (type == "array") return array(s, path);
        if (type == "string") return string(s, path);
        if (type == "integer") return integer(s, path);
        if (type == "number") return number(s, path);
        if (type == "boolean") return "(\"true\" | \"false\")";
        if (type == "null") return "\"null\"";
        error(path + "/type", "unknown type '" + type + "'");
    }
    std::string string(const JsonValue& s, const std::string& path) {
        const JsonValue *pattern = s.get("pattern"), *format = s.get("format");
        const JsonValue *min = s.get("minLength"), *max = s.get("maxLength");
        if (int(pattern != nullptr) + int(format != nullptr) + int(min || max) > 1)
            error(path, "only one of pattern, format and minLength/maxLength is supported on a string");
        if (pattern) {
            if (pattern->type != JsonValue::STRING) error(path + "/pattern", "expected a string");
            std::string re = pattern->text;  // a search: unanchored ends may have anything around the match
            bool head = !re.empty() && re[0] == '^';
            bool tail = !re.empty() && re.back() == '$' && (re.size() < 2 || re[re.size() - 2] != '\\');
            std::string any = "json-char*", body;
            try {
                body = regex_to_gbnf(re, true);
            } catch (const Error& e) {
                error(path + "/pattern", e.what());
            }
            return "\"\\\"\" " + std::string(head ? "" : any + " ") + body + (tail ? "" : " " + any) + " \"\\\"\"";
        }
        if (format) {
            // a real calendar date: 30-day months, February 29 only in leap years
            static const char* kDate =
                "([0-9]{4} \"-\" ((\"0\" [13578] | \"1\" [02]) \"-\" (\"0\" [1-9] | [12] [0-9] | \"3\" [01]) | "
                "(\"0\" [469] | \"11\") \"-\" (\"0\" [1-9] | [12] [0-9] | \"30\") | "
                "\"02-\" (\"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8])) | "
                "([0-9]{2} (\"0\" [48] | [2468] [048] | [13579] [26]) | ([02468] [048] | [13579] [26]) \"00\") "
                "\"-02-29\")";
            static const char* kTime =
                "([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] (\".\" [0-9]{1,6})? "
                "(\"Z\" | [+-] ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9])";
            std::string f = format->type == JsonValue::STRING ? format->text : "";
            std::string body =
                f == "date"        ? kDate
                : f == "time"      ? kTime
                : f == "date-time" ? std::string(kDate) + " \"T\" " + kTime
                : f == "uuid" ? "[0-9a-f]{8} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{12}"
                              : "";
            if (body.empty()) error(path + "/format", "unsupported format '" + f + "'");
            return "\"\\\"\" " + body + " \"\\\"\"";
        }
        if (min || max) {
            int lo = count_of(min, path + "/minLength", 0), hi = count_of(max, path + "/maxLength", -1);
            if (hi >= 0 && hi < lo) error(path, "maxLength is below minLength");
            return "\"\\\"\" json-char" + (hi < 0 ? sformat("{%d,}", lo) : sformat("{%d,%d}", lo, hi)) + " \"\\\"\"";
        }
        return "json-string";
    }
    std::string integer(const JsonValue& s, const std::string& path) {
        int64_t lo = 0, hi = 0;
        bool lo_open = true, hi_open = true;
        const double kMax = 1e15;  // bounds beyond this are refused rather than rounded
        for (const char* key : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
            const JsonValue* v = s.get(key);
            if (!v) continue;
            double d = number_of(*v, path + "/" + key);
            if (!(std::fabs(d) <= kMax)) error(path + "/" + key, "bound out of range (at most 1e15 in magnitude)");
            bool is_min = strstr(key, "inimum") != nullptr;  // minimum, exclusiveMinimum
            bool exclusive = key[0] == 'e';
            int64_t b = is_min ? int64_t(exclusive ? std::floor(d) + 1 : std::ceil(d))
                               : int64_t(exclusive ? std::ceil(d) - 1 : std::floor(d));
            if (is_min && (lo_open || b > lo)) lo = b, lo_open = false;
            if (!is_min && (hi_open || b < hi)) hi = b, hi_open = false;
        }
        if (!lo_open && !hi_open && hi < lo) error(path, "no integer lies within the bounds");
        if (lo_open && hi_open) return "json-int";
        return int_range_gbnf(lo, hi, lo_open, hi_open);
    }
    std::string number(const JsonValue& s, const std::string& path) {
        const JsonValue *min = s.get("minimum"), *xmin = s.get("exclusiveMinimum");
        for (const char* key : {"maximum", "exclusiveMaximum"})
            if (s.get(key))
                error(path + "/" + key, sformat("'%s' on a number is not supported (on an integer it is)", key));
        if (min && xmin) error(path, "both minimum and exclusiveMinimum on a number are not supported");
        const JsonValue* b = min ? min : xmin;
        if (!b) return "json-number";
        if (number_of(*b, path) != 0)
            error(path + (min ? "/minimum" : "/exclusiveMinimum"),
                  "a number's lower bound must be 0 (an integer's may be any)");
        if (min) return "(\"0\" | [1-9] [0-9]{0,15}) (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?";
        // > 0; no exponent (it could underflow to 0)
        return "([1-9] [0-9]{0,15} (\".\" [0-9]{1,16})? | \"0.\" \"0\"{0,15} [1-9] [0-9]{0,15})";
    }
    std::string array(const JsonValue& s, const std::string& path) {
        const JsonValue* items = s.get("items");
        if (items && items->type == JsonValue::ARRAY)
            error(path + "/items", "items as a list (tuple validation) is not supported");
        std::string item = items ? visit(*items, path + "/items") : "json-value";
        int lo = count_of(s.get("minItems"), path + "/minItems", 0),
            hi = count_of(s.get("maxItems"), path + "/maxItems", -1);
        if (hi >= 0 && hi < lo) error(path, "maxItems is below minItems");
        if (hi == 0) return "\"[\" ws \"]\"";
        if (item.size() > 40) item = rule("item", item);
        std::string more =
            "(\",\" ws " + item + ")" +
            (hi < 0 ? sformat("{%d,}", std::max(lo - 1, 0)) : sformat("{%d,%d}", std::max(lo - 1, 0), hi - 1));
        std::string list = item + " " + more + " ws";
        return "\"[\" ws " + (lo > 0 ? list : "(" + list + ")?") + " \"]\"";
    }
    std::string object(const JsonValue& s, const std::string& path) {
        const JsonValue *props = s.get("properties"), *req = s.get("required"), *extra = s.get("additionalProperties");
        if (props && props->type != JsonValue::OBJECT) error(path + "/properties", "expected an object");
        if (req && req->type != JsonValue::ARRAY) error(path + "/required", "expected an array");
        size_t n = props ? props->members.size() : 0;
        std::vector<char> required(n, 0);
        for (size_t i = 0; req && i < req->items.size(); i++) {
            const JsonValue& name = req->items[i];
            size_t k = 0;
            while (k < n && !(name.type == JsonValue::STRING && props->members[k].first == name.text)) k++;
            if (k == n) error(path + "/required/" + std::to_string(i), "not one of the properties");
            required[k] = 1;
        }
        bool extra_ok = extra && !(extra->type == JsonValue::BOOL && !extra->boolean);
        if (n == 0) {
            if (extra && !extra_ok) return "\"{\" ws \"}\"";
            if (!extra) return "json-object";
            std::string v = visit(*extra, path + "/additionalProperties");
            return "\"{\" ws (json-string \":\" ws " + v + " (\",\" ws json-string \":\" ws " + v + ")* ws)? \"}\"";
        }
        if (extra_ok) error(path + "/additionalProperties", "only false is supported next to properties");
        // rest(i, comma): properties i.. in order, the optional ones may be left out; comma: one came before.
        std::vector<std::string> kv(n), rest(2 * n + 2, "\"\"");
        for (size_t i = 0; i < n; i++) {
            std::string key;
            json_quote(key, props->members[i].first);
            kv[i] = rule("kv", gbnf_literal(key) + " \":\" ws " +
                                   visit(props->members[i].second,
                                         path + "/properties/" + pointer_escape(props->members[i].first)));
        }
        for (size_t i = n; i-- > 0;)
            for (int comma = 0; comma < 2; comma++) {
                std::string with = std::string(comma ? "\",\" ws " : "") + kv[i] + " " + rest[2 * (i + 1) + 1];
                std::string body = required[i] ? with : "(" + with + " | " + rest[2 * (i + 1) + comma] + ")";
                rest[2 * i + comma] = rule("props", body);
            }
        return "\"{\" ws " + rest[0] + " ws \"}\"";
    }

    // The expression for the whole schema; the rules it uses are in `rules` afterwards (with json_base_gbnf's).
    std::string visit_all() {
        std::string top = visit(root, "");
        while (!todo.empty()) {
            auto [name, pointer] = todo.back();
            todo.pop_back();
            rules += name + " ::= " + visit(resolve(pointer, ""), pointer) + "\n";
        }
        return top;
    }
    std::string convert() {
        std::string top = visit_all();
        return "root ::= " + top + "\n" + rules + json_base_gbnf();
    }
};

// GBNF for the JSON texts that a JSON Schema (text) accepts; the errors name the place in the schema.
inline std::string json_schema_to_gbnf(const std::string& schema_text) {
    JsonValue schema = parse_json(schema_text, "json schema");
    return SchemaToGbnf{schema, {}, {}, {}, 0}.convert();
}

// Any JSON object (OpenAI's response_format json_object).
inline std::string json_object_gbnf() { return std::string("root ::= json-object\n") + json_base_gbnf(); }

// Exactly one of the given strings (vLLM's guided_choice).
inline std::string choices_to_gbnf(const std::vector<std::string>& choices) {
    if (choices.empty()) fail("choices: the list is empty");
    std::string out = "root ::= ";
    for (size_t i = 0; i < choices.size(); i++) {
        if (!utf8_valid(choices[i])) fail("choices: choice %zu is not valid UTF-8", i);
        out += (i ? " | " : "") + gbnf_literal(choices[i]);
    }
    return out + "\n";
}

// A function the model may call: its name and the JSON Schema of its arguments ("" = any JSON object).
struct ToolSpec {
    std::string name, parameters;
};

// GBNF for Qwen's tool calls, as the chat templates ask for them: <tool_call>\n{"name": "NAME", "arguments": ARGS}
// \n</tool_call>, ARGS valid under that tool's schema; one call, or with `parallel` several, one line apart. With
// `think` (Qwen3 thinking) a reasoning block may come first: "<think>\n" text without "</" "</think>\n\n".
// Errors name the tool ("tool 'get_weather': json schema: /properties/unit: unsupported keyword 'oneOf'").
inline std::string tool_calls_gbnf(const std::vector<ToolSpec>& tools, bool parallel, bool think) {
    if (tools.empty()) fail("tool calls: no tools to call");
    std::string rules, alts;
    int n_rules = 0;
    for (size_t i = 0; i < tools.size(); i++) {
        std::string args = "json-object";
        if (!tools[i].parameters.empty()) {
            try {
                JsonValue schema = parse_json(tools[i].parameters, "json schema");
                SchemaToGbnf conv{schema, {}, {}, {}, n_rules};
                std::string top = conv.visit_all();
                n_rules = conv.n_rules;
                args = "args-" + std::to_string(i);
                rules += conv.rules + args + " ::= " + top + "\n";
            } catch (const Error& e) {
                fail("tool '%s': %s", tools[i].name.c_str(), e.what());
            }
        }
        alts += (i ? " | " : "") + gbnf_literal(tools[i].name + "\", \"arguments\": ") + " " + args;
    }
    std::string root =
        std::string("root ::= ") + (think ? "think? " : "") + (parallel ? "call (\"\\n\" call)*\n" : "call\n");
    return root + "call ::= \"<tool_call>\\n{\\\"name\\\": \\\"\" (" + alts + ") \"}\\n</tool_call>\"\n" +
           "think ::= \"<think>\\n\" ([^<] | \"<\" [^/])* \"</think>\\n\\n\"\n" + rules + json_base_gbnf();
}

inline Grammar grammar_from_json_schema(const std::string& schema) {
    return grammar_from_gbnf(json_schema_to_gbnf(schema));
}
inline Grammar grammar_json_object() { return grammar_from_gbnf(json_object_gbnf()); }
inline Grammar grammar_from_regex(const std::string& regex) {
    return grammar_from_gbnf("root ::= " + regex_to_gbnf(regex) + "\n");
}
inline Grammar grammar_from_choices(const std::vector<std::string>& c) { return grammar_from_gbnf(choices_to_gbnf(c)); }

// ============================================================================
// Generation: the prefill + decode loop shared by the CLI, batch mode and the server
// ============================================================================

// Finds stop strings in streamed text. Text that could still be the beginning of a stop string is held
// back until the next piece settles it, so a client never sees half of "</answer>" and then a retraction.
struct StopMatcher {
    std::vector<std::string> stops;  // (n_stops) non-empty stop strings
    std::string pending;             // text received but not yet released
    bool stopped = false;

    explicit StopMatcher(std::vector<std::string> s) : stops(std::move(s)) {
        stops.erase(std::remove(stops.begin(), stops.end(), std::string()), stops.end());
    }

    // Adds a piece of text and returns what can be released now. After a stop string is seen, `stopped`
    // is set and everything from the stop string on is dropped.
    std::string push(const std::string& piece) {
        if (stopped) return {};
        pending += piece;
        size_t first = std::string::npos;
        for (const std::string& s : stops) first = std::min(first, pending.find(s));
        if (first != std::string::npos) {
            stopped = true;
            std::string out = pending.substr(0, first);
            pending.clear();
            return out;
        }
        size_t keep = held_suffix();
        std::string out = pending.substr(0, pending.size() - keep);
        pending.erase(0, pending.size() - keep);
        return out;
    }

    // End of generation: whatever was held back was not a stop string after all.
    std::string flush() {
        std::string out = stopped ? std::string() : pending;
        pending.clear();
        return out;
    }

  private:
    // Length of the longest suffix of `pending` that is a proper prefix of some stop string.
    size_t held_suffix() const {
        size_t best = 0;
        for (const std::string& s : stops) {
            size_t max_len = std::min(pending.size(), s.size() - 1);
            for (size_t len = max_len; len > best; len--)
                if (pending.compare(pending.size() - len, len, s, 0, len) == 0) {
                    best = len;
                    break;
                }
        }
        return best;
    }
};

// Model output -> the parts an API returns: Qwen3's reasoning, the answer, and tool calls, from streamed pieces
// (what vLLM's qwen3 reasoning parser and hermes tool parser do):
//   - reasoning (when asked for): output that starts with "<think>" (after whitespace) is reasoning up to
//     "</think>"; newlines around it and after "</think>" are dropped, as the template drops them. Without the
//     closing tag (cut short) everything is reasoning. Output that does not start with "<think>" is all answer;
//   - tool calls (when asked for): each "<tool_call>JSON</tool_call>" whose JSON is an object with a string
//     "name" and an object "arguments" becomes a call (arguments written as Python's json.dumps writes them,
//     as the templates render them back); anything else there, or a call never closed, stays answer text. With
//     tools on, whitespace at the end of the answer text and before a call is dropped once there is a call.
// Text that could be the start of a tag is held back until the next piece settles it, so the parts of a stream
// add up to the parts of the whole output.
struct ChatPart {
    enum Kind { CONTENT, REASONING, TOOL_CALL };
    Kind kind = CONTENT;
    std::string text;  // CONTENT, REASONING
    ToolCall call;     // TOOL_CALL: name and arguments (no id)
};

struct ChatOutputParser {
    ChatOutputParser(bool reasoning, bool tools) : tools_(tools), state_(reasoning ? START : CONTENT) {}

    std::vector<ChatPart> push(const std::string& piece) {
        buf_ += piece;
        std::vector<ChatPart> out;
        while (step_(out)) {
        }
        return out;
    }

    // End of the output: whatever was held back.
    std::vector<ChatPart> finish() {
        std::vector<ChatPart> out;
        if (state_ == START) {
            add_(out, ChatPart::CONTENT, buf_);
        } else if (state_ == THINK) {
            add_(out, ChatPart::REASONING, strip_newlines(buf_, lead_, true));
        } else if (state_ == CONTENT || state_ == CALL) {
            content_(out, state_ == CALL ? "<tool_call>" + buf_ : buf_);
            if (calls_ == 0) add_(out, ChatPart::CONTENT, ws_);
        }
        buf_.clear(), ws_.clear();
        state_ = DONE;
        return out;
    }
    int calls() const { return calls_; }

  private:
    enum State { START, THINK, AFTER_THINK, CONTENT, CALL, DONE };
    bool tools_;
    State state_;
    bool lead_ = true;  // THINK: no reasoning text yet (its leading newlines are dropped)
    std::string buf_;   // received, not yet settled
    std::string ws_;    // tools: whitespace at the end of the answer text so far, held back
    int calls_ = 0;

    static void add_(std::vector<ChatPart>& out, ChatPart::Kind k, const std::string& text) {
        if (text.empty()) return;
        if (!out.empty() && out.back().kind == k && k != ChatPart::TOOL_CALL) out.back().text += text;
        else out.push_back({k, text, {}});
    }
    // The length of the longest end of s that is a proper beginning of tag.
    static size_t partial_(const std::string& s, const char* tag) {
        size_t n = strlen(tag);
        for (size_t len = std::min(s.size(), n - 1); len > 0; len--)
            if (s.compare(s.size() - len, len, tag, len) == 0) return len;
        return 0;
    }
    // Answer text: with tools on, its trailing whitespace is held back (dropped if a call follows).
    void content_(std::vector<ChatPart>& out, const std::string& text) {
        if (!tools_) return add_(out, ChatPart::CONTENT, text);
        std::string t = ws_ + text;
        size_t end = t.find_last_not_of(" \t\r\n");
        end = end == std::string::npos ? 0 : end + 1;
        ws_ = t.substr(end);
        add_(out, ChatPart::CONTENT, t.substr(0, end));
    }
    // A call's text between the tags, as a part.
    void call_(std::vector<ChatPart>& out, const std::string& body) {
        try {
            JsonValue v = parse_json(body, "tool call");
            const JsonValue *name = v.get("name"), *args = v.get("arguments");
            if (v.type == JsonValue::OBJECT && name && name->type == JsonValue::STRING && args &&
                args->type == JsonValue::OBJECT) {
                ws_.clear();
                out.push_back({ChatPart::TOOL_CALL, "", {"", name->text, python_json_dump(*args)}});
                calls_++;
                return;
            }
        } catch (const Error&) {
        }
        content_(out, "<tool_call>" + body + "</tool_call>");  // malformed: it stays text
    }
    // One move of the state machine; false when it needs more text.
    bool step_(std::vector<ChatPart>& out) {
        switch (state_) {
            case START: {
                size_t i = buf_.find_first_not_of(" \t\r\n");
                if (i == std::string::npos) return false;
                if (buf_.compare(i, 7, "<think>") == 0) {
                    buf_.erase(0, i + 7);
                    state_ = THINK;
                } else if (buf_.size() - i < 7 && std::string("<think>").compare(0, buf_.size() - i, buf_, i) == 0) {
                    return false;
                } else {
                    state_ = CONTENT;
                }
                return true;
            }
            case THINK: {
                if (lead_) buf_ = strip_newlines(buf_, true, false);
                if (buf_.empty()) return false;
                size_t close = buf_.find("</think>");
                if (close != std::string::npos) {
                    add_(out, ChatPart::REASONING, strip_newlines(buf_.substr(0, close), lead_, true));
                    buf_.erase(0, close + 8);
                    state_ = AFTER_THINK;
                    return true;
                }
                lead_ = false;
                std::string ready =
                    strip_newlines(buf_.substr(0, buf_.size() - partial_(buf_, "</think>")), false, true);
                add_(out, ChatPart::REASONING, ready);
                buf_.erase(0, ready.size());
                return false;
            }
            case AFTER_THINK:
                buf_ = strip_newlines(buf_, true, false);
                if (buf_.empty()) return false;
                state_ = CONTENT;
                return true;
            case CONTENT: {
                if (!tools_) {
                    add_(out, ChatPart::CONTENT, buf_);
                    buf_.clear();
                    return false;
                }
                size_t open = buf_.find("<tool_call>");
                if (open != std::string::npos) {
                    content_(out, buf_.substr(0, open));
                    buf_.erase(0, open + 11);
                    state_ = CALL;
                    return true;
                }
                size_t ready = buf_.size() - partial_(buf_, "<tool_call>");
                content_(out, buf_.substr(0, ready));
                buf_.erase(0, ready);
                return false;
            }
            case CALL: {
                size_t close = buf_.find("</tool_call>");
                if (close == std::string::npos) return false;
                call_(out, buf_.substr(0, close));
                buf_.erase(0, close + 12);
                state_ = CONTENT;
                return true;
            }
            case DONE:
                return false;
        }
        return false;
    }
};

struct GenerateOptions {
    int max_new_tokens = -1;            // -1: until a stop or the context is full
    std::vector<int> stop_ids;          // (n) token ids that end generation (not printed)
    std::vector<std::string> stop;      // (n) stop strings (not printed)
    // Structured output: every token keeps the text inside this grammar's language (bind_grammar); the stop ids
    // are allowed only where the text is complete, and generation stops ("stop") once nothing else can follow.
    std::shared_ptr<const TokenGrammar> grammar;
    int min_new_tokens = 0;             // the stop ids may not come before this many tokens (vLLM's min_tokens)
    // Called with each generated token that is part of the answer (not a stop id), before its text is passed on,
    // with the sampler that drew it (its logprobs are those of this token).
    std::function<void(int id, const Sampler& s)> on_token;
};

struct GenerateResult {
    std::vector<int> ids;               // the tokens sampled, a final stop id included
    std::vector<StepLogprobs> logprobs; // with the sampler's logprobs on: one per id
    std::string text;                   // the generated text, stop string excluded
    int prompt_tokens = 0;              // tokens in the prompt
    int prefill_tokens = 0;             // of those, tokens actually run (the rest came from the cache)
    int completion_tokens = 0;          // tokens sampled (a stop id counts)
    std::string finish_reason;          // "stop", "length" or "cancelled"
    double prefill_seconds = 0;         // from the start (the request's arrival) to the first token
    double decode_seconds = 0;          // everything after the first token
};

// One answer being generated, token by token: what happens to each sampled token (stop ids, stop strings, the
// grammar, the length limits, streaming its text) whatever runs the model. Session drives one at a time;
// Scheduler drives many. The driver runs the model, then: mask() -> sample with it -> accept(id).
struct Generation {
    std::vector<int> tokens;  // (n_prompt + generated) the context: the prompt, then the answer's ids
    int n_prompt = 0;
    GenerateResult result;
    bool done = false;        // finished: result.finish_reason is set

    // on_text receives UTF-8-complete pieces as they are generated; returning false cancels. context: the
    // engine's context size (the answer ends "length" when the context is full); n_vocab: the ids the sampler
    // may draw. t0: the start, for the time to first token.
    Generation(const Tokenizer& tok, int context, int n_vocab, std::vector<int> prompt, GenerateOptions opt,
               std::function<bool(const std::string&)> on_text = {}, double t0 = now_seconds())
        : tokens(std::move(prompt)), n_prompt(int(tokens.size())), opt_(std::move(opt)), on_text_(std::move(on_text)),
          ctx_(context), n_vocab_(n_vocab), t0_(t0), decoder_(tok), stops_(opt_.stop) {
        if (n_prompt == 0) fail("the prompt is empty");
        if (n_prompt > ctx_) fail("prompt is %d tokens, %d more than the context of %d", n_prompt, n_prompt - ctx_, ctx_);
        result.prompt_tokens = n_prompt;
        if (opt_.max_new_tokens == 0) {
            end_("length");
            return;
        }
        if (opt_.grammar) {
            grammar_ = std::make_unique<GrammarMatcher>(opt_.grammar);
            mask_.resize(size_t(mask_words(std::max(n_vocab_, grammar_->n_vocab()))));
            if (grammar_->finished()) {  // the grammar's only sentence is empty
                end_("stop");
                return;
            }
        }
        hold_stops_ = opt_.min_new_tokens > 0 && !opt_.stop_ids.empty();
        if (!grammar_ && hold_stops_) mask_.resize(size_t(mask_words(n_vocab_)));
        update_mask();
    }

    // The tokens that may come next (grammar, min_new_tokens), or null for all. Valid until accept().
    const uint32_t* mask() const { return mask_.empty() ? nullptr : mask_.data(); }
    int n_vocab() const { return n_vocab_; }

    // Takes the token the sampler drew (s: that sampler, for the logprobs). Returns true when the answer goes on:
    // the id is then the last of `tokens` and must run through the model, then update_mask() before the next draw.
    bool accept(int id, const Sampler& s) {
        GenerateResult& r = result;
        if (r.completion_tokens == 0) r.prefill_seconds = now_seconds() - t0_;
        r.completion_tokens++;
        r.ids.push_back(id);
        if (s.params.logprobs >= 0) r.logprobs.push_back(s.logprobs);
        if (std::find(opt_.stop_ids.begin(), opt_.stop_ids.end(), id) != opt_.stop_ids.end()) return end_("stop");
        if (opt_.on_token) opt_.on_token(id, s);
        tokens.push_back(id);
        if (grammar_ && !grammar_->advance(id)) fail("grammar: token %d was sampled outside the mask", id);
        if (!emit_(decoder_.push(id))) return end_("cancelled");
        if (stops_.stopped || (grammar_ && grammar_->finished())) return end_("stop");
        if (r.completion_tokens == opt_.max_new_tokens || int(tokens.size()) > ctx_) return end_("length");
        return true;
    }

    // Recomputes mask() for the next draw (the GPU runs its step meanwhile: call it after queueing the step).
    void update_mask() {
        bool stops_ok = result.completion_tokens >= opt_.min_new_tokens;
        if (grammar_) return next_mask(*grammar_, stops_ok ? opt_.stop_ids : std::vector<int>(), n_vocab_, mask_);
        if (!hold_stops_ || stops_ok) return mask_.clear();
        std::fill(mask_.begin(), mask_.end(), ~0u);
        for (int id : opt_.stop_ids)
            if (id >= 0 && id < n_vocab_) mask_[size_t(id >> 5)] &= ~(1u << (id & 31));
    }

    // Ends the answer from outside (a cancelled request): what was held back is dropped.
    void cancel() {
        if (!done) end_("cancelled");
    }

  private:
    GenerateOptions opt_;
    std::function<bool(const std::string&)> on_text_;
    int ctx_, n_vocab_;
    double t0_;
    StreamDecoder decoder_;
    StopMatcher stops_;
    std::unique_ptr<GrammarMatcher> grammar_;
    std::vector<uint32_t> mask_;  // (mask words) the tokens allowed next; empty: all
    bool hold_stops_ = false;     // min_new_tokens without a grammar: every token but the stop ids, for a while

    bool emit_(const std::string& piece) {
        std::string out = stops_.push(piece);
        result.text += out;
        return out.empty() || !on_text_ || on_text_(out);
    }

    // Finishes: the text held back (an incomplete UTF-8 sequence, a possible stop string) is released unless
    // the answer was cancelled or stopped by a stop string. Returns false, for accept().
    bool end_(const char* reason) {
        GenerateResult& r = result;
        r.finish_reason = reason;
        done = true;
        if (r.completion_tokens == 0) r.prefill_seconds = now_seconds() - t0_;
        if (r.finish_reason != "cancelled" && !stops_.stopped) emit_(decoder_.flush());
        if (r.finish_reason != "cancelled") {
            std::string rest = stops_.flush();
            r.text += rest;
            if (!rest.empty() && on_text_) on_text_(rest);
        }
        r.decode_seconds = now_seconds() - t0_ - r.prefill_seconds;
        return false;
    }

    // The grammar's mask for the next token, plus the stop ids where the text may end. A grammar always leaves
    // some token (every byte is a token) unless the vocabulary lacks the bytes it needs: that is an error.
    static void next_mask(GrammarMatcher& g, const std::vector<int>& stop_ids, int n_vocab,
                          std::vector<uint32_t>& mask) {
        std::fill(mask.begin(), mask.end(), 0u);
        g.allowed(mask.data());
        if (g.accepts_end())
            for (int id : stop_ids)
                if (id >= 0 && id < n_vocab) mask_set(mask.data(), id);
        bool any = false;
        for (int i = 0; i < n_vocab && !any; i += 32) any = mask[size_t(i >> 5)] != 0;
        if (!any) fail("grammar: no token of the vocabulary can continue the text here");
    }
};

// The ids a sampler may draw with this engine and tokenizer: the vocabulary both know.
inline int sample_vocab(const Engine& e, const Tokenizer& tok) { return std::min(tok.n_tokens(), e.config().vocab_size); }

// A conversation with one engine, one sequence at a time: the simple path (Scheduler runs many together).
// `cached` mirrors the engine's KV cache (forward() uses the pool's first blocks): a new prompt that starts with
// the same tokens (the previous turns of a chat) only runs its new suffix through the model.
struct Session {
    Engine& engine;
    const Tokenizer& tok;
    std::vector<int> cached;            // (<= context) token ids whose keys/values fill cache rows 0..size-1

    Session(Engine& e, const Tokenizer& t) : engine(e), tok(t) {}

    void reset() { cached.clear(); }

    // on_text receives UTF-8-complete pieces as they are generated; returning false cancels.
    GenerateResult generate(const std::vector<int>& prompt, Sampler& sampler, const GenerateOptions& opt,
                            const std::function<bool(const std::string&)>& on_text = {}) {
        double t0 = now_seconds();
        Generation g(tok, engine.context_size(), sample_vocab(engine, tok), prompt, opt, on_text, t0);
        g.result.prefill_tokens = n_prompt_run(prompt);
        if (g.done) g.result.prefill_seconds = now_seconds() - t0;  // nothing to sample (max_new_tokens 0, ...)
        while (!g.done) {
            int next = engine.sample(sampler, g.n_vocab(), g.tokens, size_t(g.n_prompt), g.mask());
            if (!g.accept(next, sampler)) break;
            engine.forward(&next, 1, int(g.tokens.size()) - 1);
            cached.push_back(next);
            // The GPU engine's forward() returns once the step is queued: the mask is made while the GPU runs it.
            g.update_mask();
        }
        return g.result;
    }

  private:
    // Runs the part of `prompt` that is not in the cache yet; returns how many tokens ran. The last prompt token
    // always runs, since its logits are what the first sample needs.
    int n_prompt_run(const std::vector<int>& prompt) {
        size_t reuse = 0;
        while (reuse < cached.size() && reuse + 1 < prompt.size() && cached[reuse] == prompt[reuse]) reuse++;
        cached.clear();  // until the forward pass succeeds, the cache content is unknown
        engine.forward(prompt.data() + reuse, int(prompt.size() - reuse), int(reuse));
        cached = prompt;
        return int(prompt.size() - reuse);
    }
};

// ----------------------------------------------------------------------------
// KvPool: the KV-cache blocks, who holds them, and the prefixes they keep (prefix caching)
// ----------------------------------------------------------------------------

// The bookkeeping of an engine's KV pool (the engine holds the data). A block is held by the sequences that
// use it (a reference count). A full block is also identified by its prefix hash: a hash chained over all the
// token ids from the sequence's start to the block's end, h_b = H(h_{b-1}, ids of block b), so equal hashes mean
// equal prefixes (the block's own ids are compared too, and a chain starts from a fixed seed). A new sequence
// takes the blocks of its longest cached prefix and runs only the rest. A block nobody holds keeps its prefix
// until the pool needs it: free blocks without a prefix are used first, then the least recently used cached
// ones, which then lose their prefix.
struct KvPool {
    explicit KvPool(int n_blocks) : blocks_(size_t(n_blocks)) {
        if (n_blocks < 1) fail("the KV pool needs at least one block, got %d", n_blocks);
        for (int b = n_blocks - 1; b >= 0; b--) empty_.push_back(b);
    }

    int n_blocks() const { return int(blocks_.size()); }
    int n_free() const { return int(empty_.size() + lru_.size()); }  // held by no sequence
    int n_cached() const { return int(by_hash_.size()); }            // keeping a prefix (held or free)

    // The hash of a block whose ids are ids[0..KV_BLOCK), after the block whose hash is `prev` (0: the first).
    static uint64_t chain(uint64_t prev, const int* ids) {
        uint64_t h = mix64(prev ^ 0x9e3779b97f4a7c15ull);
        for (int i = 0; i < KV_BLOCK; i++) h = mix64(h ^ uint32_t(ids[i]));
        return h;
    }

    // The longest cached prefix of ids[0..n) in whole blocks, at most max_blocks of them: their ids, each now
    // held once more by the caller.
    std::vector<int> take_prefix(const int* ids, int n, int max_blocks) {
        std::vector<int> got;
        uint64_t h = 0;
        for (int b = 0; b < std::min(n / KV_BLOCK, max_blocks); b++) {
            const int* block_ids = ids + size_t(b) * KV_BLOCK;
            h = chain(h, block_ids);
            auto it = by_hash_.find(h);
            if (it == by_hash_.end()) break;
            Block& blk = blocks_[size_t(it->second)];
            if (!std::equal(block_ids, block_ids + KV_BLOCK, blk.ids.begin())) break;  // a hash collision
            hold_(it->second);
            got.push_back(it->second);
        }
        return got;
    }

    // A block for new rows, held once by the caller, or -1 when every block is held.
    int allocate() {
        int b;
        if (!empty_.empty()) {
            b = empty_.back();
            empty_.pop_back();
        } else if (!lru_.empty()) {  // the least recently used cached block gives up its prefix
            b = lru_.begin()->second;
            lru_.erase(lru_.begin());
            by_hash_.erase(blocks_[size_t(b)].hash);
            blocks_[size_t(b)].hashed = false;
        } else {
            return -1;
        }
        blocks_[size_t(b)].refs = 1;
        return b;
    }

    // Block b now holds the full prefix whose last block's ids are ids[0..KV_BLOCK) and whose hash is h: later
    // sequences may share it. (When another block has that prefix already, b stays private.)
    void publish(int b, uint64_t h, const int* ids) {
        Block& blk = blocks_[size_t(b)];
        if (blk.hashed || by_hash_.count(h)) return;
        blk.hashed = true;
        blk.hash = h;
        blk.ids.assign(ids, ids + KV_BLOCK);
        by_hash_[h] = b;
    }

    // Drops one hold on block b; a block nobody holds is free (keeping its prefix, if it has one).
    void release(int b) {
        Block& blk = blocks_[size_t(b)];
        if (blk.refs < 1) fail("KvPool: block %d released more often than taken", b);
        if (--blk.refs > 0) return;
        if (blk.hashed) lru_[blk.used = ++clock_] = b;
        else empty_.push_back(b);
    }

  private:
    struct Block {
        int refs = 0;          // sequences holding it
        bool hashed = false;   // keeps a prefix: by_hash_[hash] is this block
        uint64_t hash = 0;
        uint64_t used = 0;     // when it was last released (its key in lru_ while free)
        std::vector<int> ids;  // (KV_BLOCK) its token ids, when hashed
    };
    std::vector<Block> blocks_;                  // (n_blocks)
    std::vector<int> empty_;                     // free blocks keeping no prefix
    std::map<uint64_t, int> lru_;                // free blocks keeping a prefix, by release time: oldest first
    std::unordered_map<uint64_t, int> by_hash_;  // prefix hash -> the block keeping it
    uint64_t clock_ = 0;

    void hold_(int b) {
        Block& blk = blocks_[size_t(b)];
        if (blk.refs++ == 0) lru_.erase(blk.used);
    }
};

// ----------------------------------------------------------------------------
// Scheduler: continuous batching of many generations over one engine
// ----------------------------------------------------------------------------

struct SchedulerOptions {
    int max_seqs = 8;            // sequences running at once (--parallel)
    int step_tokens = 256;       // tokens per step: decode tokens first, then prompt chunks (chunked prefill)
    bool prefix_cache = true;    // share the blocks of cached prefixes
};

// Runs many generations together, one engine step at a time (vLLM's continuous batching). Each step:
//   1. every running sequence that has its prompt done decodes one token (it gets a new block at a block
//      boundary); when no block is free, the most recently admitted sequence is preempted: its blocks are
//      released and it waits again, at the front, to be recomputed later (its answer so far is kept);
//   2. the rest of the step's token budget goes to prompts, in chunks: a running sequence's next chunk, then
//      waiting sequences, admitted in order while fewer than max_seqs run and the blocks for their whole prompt
//      are free (after the blocks of their longest cached prefix); a long prompt so never holds the others'
//      decoding back for more than one chunk;
//   3. one engine.step() over all of it; then each sequence that reached the end of its input samples its
//      next token with its own Sampler (its seed, its parameters), so what a sequence generates does not depend
//      on what else runs with it (the CPU engine's logits are bit-identical to running it alone).
// A finished or cancelled sequence releases its blocks at once; its full blocks stay cached for later prefixes.
// One thread drives a Scheduler; submit() and cancel() come from that thread too (the server's engine thread).
class Scheduler {
  public:
    struct Finished {
        int id;                 // what submit() returned
        GenerateResult result;
        std::string error;      // non-empty: the sequence failed (result holds what it had)
    };

    Scheduler(Engine& e, const Tokenizer& tok, SchedulerOptions opt)
        : engine_(e), tok_(tok), opt_(opt), pool_(e.kv_blocks()) {
        if (opt_.max_seqs < 1) fail("--parallel must be at least 1, got %d", opt_.max_seqs);
        if (pool_.n_blocks() < kv_blocks_for(e.context_size()))
            fail("the KV pool (%d blocks of %d tokens) is smaller than one context of %d tokens", pool_.n_blocks(),
                 KV_BLOCK, e.context_size());
        opt_.step_tokens = std::max(opt_.step_tokens, opt_.max_seqs);  // every running sequence can decode
    }

    // Queues a generation; returns its id. The prompt must fit the context (else an Error naming the sizes).
    int submit(std::vector<int> prompt, const SamplingParams& sp, GenerateOptions opt,
               std::function<bool(const std::string&)> on_text = {}) {
        auto s = std::make_unique<Seq>(next_id_, sp,
                                       Generation(tok_, engine_.context_size(), sample_vocab(engine_, tok_),
                                                  std::move(prompt), std::move(opt), std::move(on_text)));
        waiting_.push_back(std::move(s));
        return next_id_++;
    }

    // Ends a generation, waiting or running ("cancelled"; it is reported by the next step()).
    void cancel(int id) { cancelled_.push_back(id); }

    // One step (see above). Returns the generations that ended in it.
    std::vector<Finished> step() {
        std::vector<Finished> done;
        drop_cancelled_(done);
        std::vector<Seq*> batch = schedule_();
        if (batch.empty()) return done;
        std::vector<SeqStep> steps;
        for (Seq* s : batch) {
            SeqStep q;
            q.tokens = s->gen.tokens.data() + s->computed;
            q.n = s->chunk;
            q.pos = s->computed;
            q.blocks = s->blocks.data();
            q.want_logits = s->computed + s->chunk == int(s->gen.tokens.size());
            steps.push_back(q);
        }
        try {
            engine_.step(steps);
        } catch (const std::exception& e) {  // the engine failed: every sequence in the step fails with it
            for (Seq* s : batch) finish_(s->id, done, e.what());
            return done;
        }
        for (size_t i = 0; i < batch.size(); i++) {
            Seq* s = batch[i];
            s->computed += s->chunk;
            publish_(*s);
            if (!steps[i].want_logits) continue;
            try {
                s->gen.update_mask();
                int next = engine_.sample(s->sampler, s->gen.n_vocab(), s->gen.tokens, size_t(s->gen.n_prompt),
                                          s->gen.mask(), int(i));
                if (!s->gen.accept(next, s->sampler)) finish_(s->id, done, "");
            } catch (const std::exception& e) {
                finish_(s->id, done, e.what());
            }
        }
        return done;
    }

    bool idle() const { return running_.empty() && waiting_.empty(); }
    int n_running() const { return int(running_.size()); }
    int n_waiting() const { return int(waiting_.size()); }
    int n_preempted() const { return n_preempted_; }  // preemptions so far
    const KvPool& pool() const { return pool_; }
    const SchedulerOptions& options() const { return opt_; }

  private:
    struct Seq {
        Seq(int i, const SamplingParams& sp, Generation g) : id(i), sampler(sp), gen(std::move(g)) {}
        int id;
        Sampler sampler;
        Generation gen;
        std::vector<int> blocks;  // (kv_blocks_for(computed + chunk)) its block table
        int computed = 0;         // tokens of gen.tokens whose keys and values are in its blocks
        int chunk = 0;            // tokens it runs in this step
        int published = 0;        // tokens of its first blocks already offered to the prefix cache
        uint64_t hash = 0;        // the prefix hash of its last offered block
        bool started = false;     // admitted once (prefill_tokens counted)
    };
    Engine& engine_;
    const Tokenizer& tok_;
    SchedulerOptions opt_;
    KvPool pool_;
    std::deque<std::unique_ptr<Seq>> waiting_;  // in order of arrival; preempted ones go back to the front
    std::vector<std::unique_ptr<Seq>> running_;  // in order of admission
    std::vector<int> cancelled_;                 // ids to drop at the next step
    int next_id_ = 0, n_preempted_ = 0;

    // Picks this step's work (see the class comment); sets each chosen sequence's chunk.
    std::vector<Seq*> schedule_() {
        int budget = opt_.step_tokens;
        for (auto& s : running_) s->chunk = 0;
        for (size_t i = 0; i < running_.size(); i++) {  // 1. decode tokens (index-based: preemption shrinks it)
            Seq& s = *running_[i];
            if (s.computed + 1 != int(s.gen.tokens.size())) continue;  // still in its prompt
            if (!grow_(s, s.computed + 1)) {
                preempt_latest_();
                if (i >= running_.size()) break;  // it was s itself
                i--;                              // retry s with the freed blocks
                continue;
            }
            s.chunk = 1;
            budget--;
        }
        for (auto& s : running_)  // 2a. the next chunk of prompts already admitted
            if (budget > 0 && s->chunk == 0 && s->computed < int(s->gen.tokens.size())) budget -= prompt_chunk_(*s, budget);
        while (budget > 0 && !waiting_.empty() && int(running_.size()) < opt_.max_seqs && admit_(*waiting_.front())) {
            running_.push_back(std::move(waiting_.front()));  // 2b. new sequences
            waiting_.pop_front();
            budget -= prompt_chunk_(*running_.back(), budget);
        }
        std::vector<Seq*> batch;
        for (auto& s : running_)
            if (s->chunk > 0) batch.push_back(s.get());
        return batch;
    }

    // Gives s the blocks for its first `tokens` tokens; false (and nothing taken) when the pool has too few.
    bool grow_(Seq& s, int tokens) {
        int need = kv_blocks_for(tokens) - int(s.blocks.size());
        if (need > pool_.n_free()) return false;
        for (int i = 0; i < need; i++) s.blocks.push_back(pool_.allocate());
        return true;
    }

    // The next chunk of s's input (prompt, or prompt and answer after a preemption) within the budget.
    int prompt_chunk_(Seq& s, int budget) {
        s.chunk = std::min(budget, int(s.gen.tokens.size()) - s.computed);
        return s.chunk;
    }

    // Admits s if the blocks for all of its input are free after its cached prefix: takes them.
    bool admit_(Seq& s) {
        const std::vector<int>& ids = s.gen.tokens;
        int n = int(ids.size());
        // At least the last token runs: its logits are what the next draw needs.
        std::vector<int> cached = opt_.prefix_cache ? pool_.take_prefix(ids.data(), n, (n - 1) / KV_BLOCK)
                                                    : std::vector<int>();
        // Keep a block of room for each running sequence, so that admitting does not force a preemption at once.
        if (kv_blocks_for(n) - int(cached.size()) + int(running_.size()) > pool_.n_free()) {
            for (int b : cached) pool_.release(b);
            return false;
        }
        s.blocks = cached;
        s.computed = s.published = int(cached.size()) * KV_BLOCK;
        s.hash = 0;  // the chain up to the last cached block, which the next published block continues
        for (size_t b = 0; b < cached.size(); b++) s.hash = KvPool::chain(s.hash, ids.data() + b * KV_BLOCK);
        grow_(s, n);
        if (!s.started) s.gen.result.prefill_tokens = n - s.computed;
        s.started = true;
        return true;
    }

    // Offers s's newly completed blocks to the prefix cache.
    void publish_(Seq& s) {
        if (!opt_.prefix_cache) return;
        const int* ids = s.gen.tokens.data();
        for (int b = s.published / KV_BLOCK; (b + 1) * KV_BLOCK <= s.computed; b++) {
            s.hash = KvPool::chain(b == 0 ? 0 : s.hash, ids + size_t(b) * KV_BLOCK);
            pool_.publish(s.blocks[size_t(b)], s.hash, ids + size_t(b) * KV_BLOCK);
            s.published = (b + 1) * KV_BLOCK;
        }
    }

    // The most recently admitted running sequence gives its blocks back and waits again, first in line.
    void preempt_latest_() {
        std::unique_ptr<Seq> s = std::move(running_.back());
        running_.pop_back();
        release_(*s);
        n_preempted_++;
        waiting_.push_front(std::move(s));
    }

    void release_(Seq& s) {
        for (int b : s.blocks) pool_.release(b);
        s.blocks.clear();
        s.computed = s.published = s.chunk = 0;
        s.hash = 0;
    }

    // Removes sequence `id` (running or waiting), releases its blocks and reports it.
    void finish_(int id, std::vector<Finished>& done, const std::string& error) {
        auto take = [&](auto& list) -> std::unique_ptr<Seq> {
            for (auto it = list.begin(); it != list.end(); ++it)
                if ((*it)->id == id) {
                    std::unique_ptr<Seq> s = std::move(*it);
                    list.erase(it);
                    return s;
                }
            return nullptr;
        };
        std::unique_ptr<Seq> s = take(running_);
        if (!s) s = take(waiting_);
        if (!s) return;
        release_(*s);
        if (!s->gen.done) s->gen.cancel();
        done.push_back({id, std::move(s->gen.result), error});
    }

    // Drops the cancelled sequences, and reports those that ended before running (max_new_tokens 0, ...).
    void drop_cancelled_(std::vector<Finished>& done) {
        for (int id : cancelled_) finish_(id, done, "");
        cancelled_.clear();
        std::vector<int> ended;
        for (auto& s : waiting_)
            if (s->gen.done) ended.push_back(s->id);
        for (int id : ended) finish_(id, done, "");
    }
};

// BEGIN GENERATED UNICODE TABLES
// ============================================================================
// Appendix: Unicode tables for the tokenizer (character classes, NFC data)
// ============================================================================
// Generated by tools/gen_unicode.py; do not edit.
// Source: Python 3.11.7 unicodedata (Unicode 14.0.0), matched code point by code point to the
// reference tokenizer (tokenizers 0.23.3). Its regex engine knows Unicode 16.0
// (\p{L}, \p{N}, \s below are its sets); its NFC normalizer Unicode 9.0 (marks and mappings
// added since, e.g. the decomposition of U+11938, are left out here).
// Every table is sorted by code point, so a lookup is a binary search.

struct CodeRange { uint32_t lo, hi; };                 // inclusive
struct CombiningRange { uint32_t lo, hi; uint8_t ccc; }; // canonical combining class
struct Decomposition { uint32_t cp; uint16_t offset; uint8_t len; };  // into kDecompositionData
struct Composition { uint32_t first, second, composite; };

// Letters \p{L} (general categories Lu Ll Lt Lm Lo): 677 ranges.
inline constexpr CodeRange kLetterRanges[] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA},
    {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x2C1}, {0x2C6, 0x2D1}, {0x2E0, 0x2E4},
    {0x2EC, 0x2EC}, {0x2EE, 0x2EE}, {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D},
    {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1},
    {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556}, {0x559, 0x559},
    {0x560, 0x588}, {0x5D0, 0x5EA}, {0x5EF, 0x5F2}, {0x620, 0x64A}, {0x66E, 0x66F},
    {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6}, {0x6EE, 0x6EF}, {0x6FA, 0x6FC},
    {0x6FF, 0x6FF}, {0x710, 0x710}, {0x712, 0x72F}, {0x74D, 0x7A5}, {0x7B1, 0x7B1},
    {0x7CA, 0x7EA}, {0x7F4, 0x7F5}, {0x7FA, 0x7FA}, {0x800, 0x815}, {0x81A, 0x81A},
    {0x824, 0x824}, {0x828, 0x828}, {0x840, 0x858}, {0x860, 0x86A}, {0x870, 0x887},
    {0x889, 0x88E}, {0x8A0, 0x8C9}, {0x904, 0x939}, {0x93D, 0x93D}, {0x950, 0x950},
    {0x958, 0x961}, {0x971, 0x980}, {0x985, 0x98C}, {0x98F, 0x990}, {0x993, 0x9A8},
    {0x9AA, 0x9B0}, {0x9B2, 0x9B2}, {0x9B6, 0x9B9}, {0x9BD, 0x9BD}, {0x9CE, 0x9CE},
    {0x9DC, 0x9DD}, {0x9DF, 0x9E1}, {0x9F0, 0x9F1}, {0x9FC, 0x9FC}, {0xA05, 0xA0A},
    {0xA0F, 0xA10}, {0xA13, 0xA28}, {0xA2A, 0xA30}, {0xA32, 0xA33}, {0xA35, 0xA36},
    {0xA38, 0xA39}, {0xA59, 0xA5C}, {0xA5E, 0xA5E}, {0xA72, 0xA74}, {0xA85, 0xA8D},
    {0xA8F, 0xA91}, {0xA93, 0xAA8}, {0xAAA, 0xAB0}, {0xAB2, 0xAB3}, {0xAB5, 0xAB9},
    {0xABD, 0xABD}, {0xAD0, 0xAD0}, {0xAE0, 0xAE1}, {0xAF9, 0xAF9}, {0xB05, 0xB0C},
    {0xB0F, 0xB10}, {0xB13, 0xB28}, {0xB2A, 0xB30}, {0xB32, 0xB33}, {0xB35, 0xB39},
    {0xB3D, 0xB3D}, {0xB5C, 0xB5D}, {0xB5F, 0xB61}, {0xB71, 0xB71}, {0xB83, 0xB83},
    {0xB85, 0xB8A}, {0xB8E, 0xB90}, {0xB92, 0xB95}, {0xB99, 0xB9A}, {0xB9C, 0xB9C},
    {0xB9E, 0xB9F}, {0xBA3, 0xBA4}, {0xBA8, 0xBAA}, {0xBAE, 0xBB9}, {0xBD0, 0xBD0},
    {0xC05, 0xC0C}, {0xC0E, 0xC10}, {0xC12, 0xC28}, {0xC2A, 0xC39}, {0xC3D, 0xC3D},
    {0xC58, 0xC5A}, {0xC5D, 0xC5D}, {0xC60, 0xC61}, {0xC80, 0xC80}, {0xC85, 0xC8C},
    {0xC8E, 0xC90}, {0xC92, 0xCA8}, {0xCAA, 0xCB3}, {0xCB5, 0xCB9}, {0xCBD, 0xCBD},
    {0xCDD, 0xCDE}, {0xCE0, 0xCE1}, {0xCF1, 0xCF2}, {0xD04, 0xD0C}, {0xD0E, 0xD10},
    {0xD12, 0xD3A}, {0xD3D, 0xD3D}, {0xD4E, 0xD4E}, {0xD54, 0xD56}, {0xD5F, 0xD61},
    {0xD7A, 0xD7F}, {0xD85, 0xD96}, {0xD9A, 0xDB1}, {0xDB3, 0xDBB}, {0xDBD, 0xDBD},
    {0xDC0, 0xDC6}, {0xE01, 0xE30}, {0xE32, 0xE33}, {0xE40, 0xE46}, {0xE81, 0xE82},
    {0xE84, 0xE84}, {0xE86, 0xE8A}, {0xE8C, 0xEA3}, {0xEA5, 0xEA5}, {0xEA7, 0xEB0},
    {0xEB2, 0xEB3}, {0xEBD, 0xEBD}, {0xEC0, 0xEC4}, {0xEC6, 0xEC6}, {0xEDC, 0xEDF},
    {0xF00, 0xF00}, {0xF40, 0xF47}, {0xF49, 0xF6C}, {0xF88, 0xF8C}, {0x1000, 0x102A},
    {0x103F, 0x103F}, {0x1050, 0x1055}, {0x105A, 0x105D}, {0x1061, 0x1061}, {0x1065, 0x1066},
    {0x106E, 0x1070}, {0x1075, 0x1081}, {0x108E, 0x108E}, {0x10A0, 0x10C5}, {0x10C7, 0x10C7},
    {0x10CD, 0x10CD}, {0x10D0, 0x10FA}, {0x10FC, 0x1248}, {0x124A, 0x124D}, {0x1250, 0x1256},
    {0x1258, 0x1258}, {0x125A, 0x125D}, {0x1260, 0x1288}, {0x128A, 0x128D}, {0x1290, 0x12B0},
    {0x12B2, 0x12B5}, {0x12B8, 0x12BE}, {0x12C0, 0x12C0}, {0x12C2, 0x12C5}, {0x12C8, 0x12D6},
    {0x12D8, 0x1310}, {0x1312, 0x1315}, {0x1318, 0x135A}, {0x1380, 0x138F}, {0x13A0, 0x13F5},
    {0x13F8, 0x13FD}, {0x1401, 0x166C}, {0x166F, 0x167F}, {0x1681, 0x169A}, {0x16A0, 0x16EA},
    {0x16F1, 0x16F8}, {0x1700, 0x1711}, {0x171F, 0x1731}, {0x1740, 0x1751}, {0x1760, 0x176C},
    {0x176E, 0x1770}, {0x1780, 0x17B3}, {0x17D7, 0x17D7}, {0x17DC, 0x17DC}, {0x1820, 0x1878},
    {0x1880, 0x1884}, {0x1887, 0x18A8}, {0x18AA, 0x18AA}, {0x18B0, 0x18F5}, {0x1900, 0x191E},
    {0x1950, 0x196D}, {0x1970, 0x1974}, {0x1980, 0x19AB}, {0x19B0, 0x19C9}, {0x1A00, 0x1A16},
    {0x1A20, 0x1A54}, {0x1AA7, 0x1AA7}, {0x1B05, 0x1B33}, {0x1B45, 0x1B4C}, {0x1B83, 0x1BA0},
    {0x1BAE, 0x1BAF}, {0x1BBA, 0x1BE5}, {0x1C00, 0x1C23}, {0x1C4D, 0x1C4F}, {0x1C5A, 0x1C7D},
    {0x1C80, 0x1C8A}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1CE9, 0x1CEC}, {0x1CEE, 0x1CF3},
    {0x1CF5, 0x1CF6}, {0x1CFA, 0x1CFA}, {0x1D00, 0x1DBF}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D},
    {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE},
    {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC},
    {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2071, 0x2071}, {0x207F, 0x207F}, {0x2090, 0x209C},
    {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D},
    {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2139},
    {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2CE4},
    {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0x2D00, 0x2D25}, {0x2D27, 0x2D27}, {0x2D2D, 0x2D2D},
    {0x2D30, 0x2D67}, {0x2D6F, 0x2D6F}, {0x2D80, 0x2D96}, {0x2DA0, 0x2DA6}, {0x2DA8, 0x2DAE},
    {0x2DB0, 0x2DB6}, {0x2DB8, 0x2DBE}, {0x2DC0, 0x2DC6}, {0x2DC8, 0x2DCE}, {0x2DD0, 0x2DD6},
    {0x2DD8, 0x2DDE}, {0x2E2F, 0x2E2F}, {0x3005, 0x3006}, {0x3031, 0x3035}, {0x303B, 0x303C},
    {0x3041, 0x3096}, {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF}, {0x3105, 0x312F},
    {0x3131, 0x318E}, {0x31A0, 0x31BF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF}, {0x4E00, 0xA48C},
    {0xA4D0, 0xA4FD}, {0xA500, 0xA60C}, {0xA610, 0xA61F}, {0xA62A, 0xA62B}, {0xA640, 0xA66E},
    {0xA67F, 0xA69D}, {0xA6A0, 0xA6E5}, {0xA717, 0xA71F}, {0xA722, 0xA788}, {0xA78B, 0xA7CD},
    {0xA7D0, 0xA7D1}, {0xA7D3, 0xA7D3}, {0xA7D5, 0xA7DC}, {0xA7F2, 0xA801}, {0xA803, 0xA805},
    {0xA807, 0xA80A}, {0xA80C, 0xA822}, {0xA840, 0xA873}, {0xA882, 0xA8B3}, {0xA8F2, 0xA8F7},
    {0xA8FB, 0xA8FB}, {0xA8FD, 0xA8FE}, {0xA90A, 0xA925}, {0xA930, 0xA946}, {0xA960, 0xA97C},
    {0xA984, 0xA9B2}, {0xA9CF, 0xA9CF}, {0xA9E0, 0xA9E4}, {0xA9E6, 0xA9EF}, {0xA9FA, 0xA9FE},
    {0xAA00, 0xAA28}, {0xAA40, 0xAA42}, {0xAA44, 0xAA4B}, {0xAA60, 0xAA76}, {0xAA7A, 0xAA7A},
    {0xAA7E, 0xAAAF}, {0xAAB1, 0xAAB1}, {0xAAB5, 0xAAB6}, {0xAAB9, 0xAABD}, {0xAAC0, 0xAAC0},
    {0xAAC2, 0xAAC2}, {0xAADB, 0xAADD}, {0xAAE0, 0xAAEA}, {0xAAF2, 0xAAF4}, {0xAB01, 0xAB06},
    {0xAB09, 0xAB0E}, {0xAB11, 0xAB16}, {0xAB20, 0xAB26}, {0xAB28, 0xAB2E}, {0xAB30, 0xAB5A},
    {0xAB5C, 0xAB69}, {0xAB70, 0xABE2}, {0xAC00, 0xD7A3}, {0xD7B0, 0xD7C6}, {0xD7CB, 0xD7FB},
    {0xF900, 0xFA6D}, {0xFA70, 0xFAD9}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFB1D, 0xFB1D},
    {0xFB1F, 0xFB28}, {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41},
    {0xFB43, 0xFB44}, {0xFB46, 0xFBB1}, {0xFBD3, 0xFD3D}, {0xFD50, 0xFD8F}, {0xFD92, 0xFDC7},
    {0xFDF0, 0xFDFB}, {0xFE70, 0xFE74}, {0xFE76, 0xFEFC}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A},
    {0xFF66, 0xFFBE}, {0xFFC2, 0xFFC7}, {0xFFCA, 0xFFCF}, {0xFFD2, 0xFFD7}, {0xFFDA, 0xFFDC},
    {0x10000, 0x1000B}, {0x1000D, 0x10026}, {0x10028, 0x1003A}, {0x1003C, 0x1003D}, {0x1003F, 0x1004D},
    {0x10050, 0x1005D}, {0x10080, 0x100FA}, {0x10280, 0x1029C}, {0x102A0, 0x102D0}, {0x10300, 0x1031F},
    {0x1032D, 0x10340}, {0x10342, 0x10349}, {0x10350, 0x10375}, {0x10380, 0x1039D}, {0x103A0, 0x103C3},
    {0x103C8, 0x103CF}, {0x10400, 0x1049D}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10500, 0x10527},
    {0x10530, 0x10563}, {0x10570, 0x1057A}, {0x1057C, 0x1058A}, {0x1058C, 0x10592}, {0x10594, 0x10595},
    {0x10597, 0x105A1}, {0x105A3, 0x105B1}, {0x105B3, 0x105B9}, {0x105BB, 0x105BC}, {0x105C0, 0x105F3},
    {0x10600, 0x10736}, {0x10740, 0x10755}, {0x10760, 0x10767}, {0x10780, 0x10785}, {0x10787, 0x107B0},
    {0x107B2, 0x107BA}, {0x10800, 0x10805}, {0x10808, 0x10808}, {0x1080A, 0x10835}, {0x10837, 0x10838},
    {0x1083C, 0x1083C}, {0x1083F, 0x10855}, {0x10860, 0x10876}, {0x10880, 0x1089E}, {0x108E0, 0x108F2},
    {0x108F4, 0x108F5}, {0x10900, 0x10915}, {0x10920, 0x10939}, {0x10980, 0x109B7}, {0x109BE, 0x109BF},
    {0x10A00, 0x10A00}, {0x10A10, 0x10A13}, {0x10A15, 0x10A17}, {0x10A19, 0x10A35}, {0x10A60, 0x10A7C},
    {0x10A80, 0x10A9C}, {0x10AC0, 0x10AC7}, {0x10AC9, 0x10AE4}, {0x10B00, 0x10B35}, {0x10B40, 0x10B55},
    {0x10B60, 0x10B72}, {0x10B80, 0x10B91}, {0x10C00, 0x10C48}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2},
    {0x10D00, 0x10D23}, {0x10D4A, 0x10D65}, {0x10D6F, 0x10D85}, {0x10E80, 0x10EA9}, {0x10EB0, 0x10EB1},
    {0x10EC2, 0x10EC4}, {0x10F00, 0x10F1C}, {0x10F27, 0x10F27}, {0x10F30, 0x10F45}, {0x10F70, 0x10F81},
    {0x10FB0, 0x10FC4}, {0x10FE0, 0x10FF6}, {0x11003, 0x11037}, {0x11071, 0x11072}, {0x11075, 0x11075},
    {0x11083, 0x110AF}, {0x110D0, 0x110E8}, {0x11103, 0x11126}, {0x11144, 0x11144}, {0x11147, 0x11147},
    {0x11150, 0x11172}, {0x11176, 0x11176}, {0x11183, 0x111B2}, {0x111C1, 0x111C4}, {0x111DA, 0x111DA},
    {0x111DC, 0x111DC}, {0x11200, 0x11211}, {0x11213, 0x1122B}, {0x1123F, 0x11240}, {0x11280, 0x11286},
    {0x11288, 0x11288}, {0x1128A, 0x1128D}, {0x1128F, 0x1129D}, {0x1129F, 0x112A8}, {0x112B0, 0x112DE},
    {0x11305, 0x1130C}, {0x1130F, 0x11310}, {0x11313, 0x11328}, {0x1132A, 0x11330}, {0x11332, 0x11333},
    {0x11335, 0x11339}, {0x1133D, 0x1133D}, {0x11350, 0x11350}, {0x1135D, 0x11361}, {0x11380, 0x11389},
    {0x1138B, 0x1138B}, {0x1138E, 0x1138E}, {0x11390, 0x113B5}, {0x113B7, 0x113B7}, {0x113D1, 0x113D1},
    {0x113D3, 0x113D3}, {0x11400, 0x11434}, {0x11447, 0x1144A}, {0x1145F, 0x11461}, {0x11480, 0x114AF},
    {0x114C4, 0x114C5}, {0x114C7, 0x114C7}, {0x11580, 0x115AE}, {0x115D8, 0x115DB}, {0x11600, 0x1162F},
    {0x11644, 0x11644}, {0x11680, 0x116AA}, {0x116B8, 0x116B8}, {0x11700, 0x1171A}, {0x11740, 0x11746},
    {0x11800, 0x1182B}, {0x118A0, 0x118DF}, {0x118FF, 0x11906}, {0x11909, 0x11909}, {0x1190C, 0x11913},
    {0x11915, 0x11916}, {0x11918, 0x1192F}, {0x1193F, 0x1193F}, {0x11941, 0x11941}, {0x119A0, 0x119A7},
    {0x119AA, 0x119D0}, {0x119E1, 0x119E1}, {0x119E3, 0x119E3}, {0x11A00, 0x11A00}, {0x11A0B, 0x11A32},
    {0x11A3A, 0x11A3A}, {0x11A50, 0x11A50}, {0x11A5C, 0x11A89}, {0x11A9D, 0x11A9D}, {0x11AB0, 0x11AF8},
    {0x11BC0, 0x11BE0}, {0x11C00, 0x11C08}, {0x11C0A, 0x11C2E}, {0x11C40, 0x11C40}, {0x11C72, 0x11C8F},
    {0x11D00, 0x11D06}, {0x11D08, 0x11D09}, {0x11D0B, 0x11D30}, {0x11D46, 0x11D46}, {0x11D60, 0x11D65},
    {0x11D67, 0x11D68}, {0x11D6A, 0x11D89}, {0x11D98, 0x11D98}, {0x11EE0, 0x11EF2}, {0x11F02, 0x11F02},
    {0x11F04, 0x11F10}, {0x11F12, 0x11F33}, {0x11FB0, 0x11FB0}, {0x12000, 0x12399}, {0x12480, 0x12543},
    {0x12F90, 0x12FF0}, {0x13000, 0x1342F}, {0x13441, 0x13446}, {0x13460, 0x143FA}, {0x14400, 0x14646},
    {0x16100, 0x1611D}, {0x16800, 0x16A38}, {0x16A40, 0x16A5E}, {0x16A70, 0x16ABE}, {0x16AD0, 0x16AED},
    {0x16B00, 0x16B2F}, {0x16B40, 0x16B43}, {0x16B63, 0x16B77}, {0x16B7D, 0x16B8F}, {0x16D40, 0x16D6C},
    {0x16E40, 0x16E7F}, {0x16F00, 0x16F4A}, {0x16F50, 0x16F50}, {0x16F93, 0x16F9F}, {0x16FE0, 0x16FE1},
    {0x16FE3, 0x16FE3}, {0x17000, 0x187F7}, {0x18800, 0x18CD5}, {0x18CFF, 0x18D08}, {0x1AFF0, 0x1AFF3},
    {0x1AFF5, 0x1AFFB}, {0x1AFFD, 0x1AFFE}, {0x1B000, 0x1B122}, {0x1B132, 0x1B132}, {0x1B150, 0x1B152},
    {0x1B155, 0x1B155}, {0x1B164, 0x1B167}, {0x1B170, 0x1B2FB}, {0x1BC00, 0x1BC6A}, {0x1BC70, 0x1BC7C},
    {0x1BC80, 0x1BC88}, {0x1BC90, 0x1BC99}, {0x1D400, 0x1D454}, {0x1D456, 0x1D49C}, {0x1D49E, 0x1D49F},
    {0x1D4A2, 0x1D4A2}, {0x1D4A5, 0x1D4A6}, {0x1D4A9, 0x1D4AC}, {0x1D4AE, 0x1D4B9}, {0x1D4BB, 0x1D4BB},
    {0x1D4BD, 0x1D4C3}, {0x1D4C5, 0x1D505}, {0x1D507, 0x1D50A}, {0x1D50D, 0x1D514}, {0x1D516, 0x1D51C},
    {0x1D51E, 0x1D539}, {0x1D53B, 0x1D53E}, {0x1D540, 0x1D544}, {0x1D546, 0x1D546}, {0x1D54A, 0x1D550},
    {0x1D552, 0x1D6A5}, {0x1D6A8, 0x1D6C0}, {0x1D6C2, 0x1D6DA}, {0x1D6DC, 0x1D6FA}, {0x1D6FC, 0x1D714},
    {0x1D716, 0x1D734}, {0x1D736, 0x1D74E}, {0x1D750, 0x1D76E}, {0x1D770, 0x1D788}, {0x1D78A, 0x1D7A8},
    {0x1D7AA, 0x1D7C2}, {0x1D7C4, 0x1D7CB}, {0x1DF00, 0x1DF1E}, {0x1DF25, 0x1DF2A}, {0x1E030, 0x1E06D},
    {0x1E100, 0x1E12C}, {0x1E137, 0x1E13D}, {0x1E14E, 0x1E14E}, {0x1E290, 0x1E2AD}, {0x1E2C0, 0x1E2EB},
    {0x1E4D0, 0x1E4EB}, {0x1E5D0, 0x1E5ED}, {0x1E5F0, 0x1E5F0}, {0x1E7E0, 0x1E7E6}, {0x1E7E8, 0x1E7EB},
    {0x1E7ED, 0x1E7EE}, {0x1E7F0, 0x1E7FE}, {0x1E800, 0x1E8C4}, {0x1E900, 0x1E943}, {0x1E94B, 0x1E94B},
    {0x1EE00, 0x1EE03}, {0x1EE05, 0x1EE1F}, {0x1EE21, 0x1EE22}, {0x1EE24, 0x1EE24}, {0x1EE27, 0x1EE27},
    {0x1EE29, 0x1EE32}, {0x1EE34, 0x1EE37}, {0x1EE39, 0x1EE39}, {0x1EE3B, 0x1EE3B}, {0x1EE42, 0x1EE42},
    {0x1EE47, 0x1EE47}, {0x1EE49, 0x1EE49}, {0x1EE4B, 0x1EE4B}, {0x1EE4D, 0x1EE4F}, {0x1EE51, 0x1EE52},
    {0x1EE54, 0x1EE54}, {0x1EE57, 0x1EE57}, {0x1EE59, 0x1EE59}, {0x1EE5B, 0x1EE5B}, {0x1EE5D, 0x1EE5D},
    {0x1EE5F, 0x1EE5F}, {0x1EE61, 0x1EE62}, {0x1EE64, 0x1EE64}, {0x1EE67, 0x1EE6A}, {0x1EE6C, 0x1EE72},
    {0x1EE74, 0x1EE77}, {0x1EE79, 0x1EE7C}, {0x1EE7E, 0x1EE7E}, {0x1EE80, 0x1EE89}, {0x1EE8B, 0x1EE9B},
    {0x1EEA1, 0x1EEA3}, {0x1EEA5, 0x1EEA9}, {0x1EEAB, 0x1EEBB}, {0x20000, 0x2A6DF}, {0x2A700, 0x2B739},
    {0x2B740, 0x2B81D}, {0x2B820, 0x2CEA1}, {0x2CEB0, 0x2EBE0}, {0x2EBF0, 0x2EE5D}, {0x2F800, 0x2FA1D},
    {0x30000, 0x3134A}, {0x31350, 0x323AF},
};

// Numbers \p{N} (general categories Nd Nl No): 144 ranges.
inline constexpr CodeRange kNumberRanges[] = {
    {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669},
    {0x6F0, 0x6F9}, {0x7C0, 0x7C9}, {0x966, 0x96F}, {0x9E6, 0x9EF}, {0x9F4, 0x9F9},
    {0xA66, 0xA6F}, {0xAE6, 0xAEF}, {0xB66, 0xB6F}, {0xB72, 0xB77}, {0xBE6, 0xBF2},
    {0xC66, 0xC6F}, {0xC78, 0xC7E}, {0xCE6, 0xCEF}, {0xD58, 0xD5E}, {0xD66, 0xD78},
    {0xDE6, 0xDEF}, {0xE50, 0xE59}, {0xED0, 0xED9}, {0xF20, 0xF33}, {0x1040, 0x1049},
    {0x1090, 0x1099}, {0x1369, 0x137C}, {0x16EE, 0x16F0}, {0x17E0, 0x17E9}, {0x17F0, 0x17F9},
    {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19DA}, {0x1A80, 0x1A89}, {0x1A90, 0x1A99},
    {0x1B50, 0x1B59}, {0x1BB0, 0x1BB9}, {0x1C40, 0x1C49}, {0x1C50, 0x1C59}, {0x2070, 0x2070},
    {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189}, {0x2460, 0x249B},
    {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x2CFD, 0x2CFD}, {0x3007, 0x3007}, {0x3021, 0x3029},
    {0x3038, 0x303A}, {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F}, {0x3251, 0x325F},
    {0x3280, 0x3289}, {0x32B1, 0x32BF}, {0xA620, 0xA629}, {0xA6E6, 0xA6EF}, {0xA830, 0xA835},
    {0xA8D0, 0xA8D9}, {0xA900, 0xA909}, {0xA9D0, 0xA9D9}, {0xA9F0, 0xA9F9}, {0xAA50, 0xAA59},
    {0xABF0, 0xABF9}, {0xFF10, 0xFF19}, {0x10107, 0x10133}, {0x10140, 0x10178}, {0x1018A, 0x1018B},
    {0x102E1, 0x102FB}, {0x10320, 0x10323}, {0x10341, 0x10341}, {0x1034A, 0x1034A}, {0x103D1, 0x103D5},
    {0x104A0, 0x104A9}, {0x10858, 0x1085F}, {0x10879, 0x1087F}, {0x108A7, 0x108AF}, {0x108FB, 0x108FF},
    {0x10916, 0x1091B}, {0x109BC, 0x109BD}, {0x109C0, 0x109CF}, {0x109D2, 0x109FF}, {0x10A40, 0x10A48},
    {0x10A7D, 0x10A7E}, {0x10A9D, 0x10A9F}, {0x10AEB, 0x10AEF}, {0x10B58, 0x10B5F}, {0x10B78, 0x10B7F},
    {0x10BA9, 0x10BAF}, {0x10CFA, 0x10CFF}, {0x10D30, 0x10D39}, {0x10D40, 0x10D49}, {0x10E60, 0x10E7E},
    {0x10F1D, 0x10F26}, {0x10F51, 0x10F54}, {0x10FC5, 0x10FCB}, {0x11052, 0x1106F}, {0x110F0, 0x110F9},
    {0x11136, 0x1113F}, {0x111D0, 0x111D9}, {0x111E1, 0x111F4}, {0x112F0, 0x112F9}, {0x11450, 0x11459},
    {0x114D0, 0x114D9}, {0x11650, 0x11659}, {0x116C0, 0x116C9}, {0x116D0, 0x116E3}, {0x11730, 0x1173B},
    {0x118E0, 0x118F2}, {0x11950, 0x11959}, {0x11BF0, 0x11BF9}, {0x11C50, 0x11C6C}, {0x11D50, 0x11D59},
    {0x11DA0, 0x11DA9}, {0x11F50, 0x11F59}, {0x11FC0, 0x11FD4}, {0x12400, 0x1246E}, {0x16130, 0x16139},
    {0x16A60, 0x16A69}, {0x16AC0, 0x16AC9}, {0x16B50, 0x16B59}, {0x16B5B, 0x16B61}, {0x16D70, 0x16D79},
    {0x16E80, 0x16E96}, {0x1CCF0, 0x1CCF9}, {0x1D2C0, 0x1D2D3}, {0x1D2E0, 0x1D2F3}, {0x1D360, 0x1D378},
    {0x1D7CE, 0x1D7FF}, {0x1E140, 0x1E149}, {0x1E2F0, 0x1E2F9}, {0x1E4F0, 0x1E4F9}, {0x1E5F1, 0x1E5FA},
    {0x1E8C7, 0x1E8CF}, {0x1E950, 0x1E959}, {0x1EC71, 0x1ECAB}, {0x1ECAD, 0x1ECAF}, {0x1ECB1, 0x1ECB4},
    {0x1ED01, 0x1ED2D}, {0x1ED2F, 0x1ED3D}, {0x1F100, 0x1F10C}, {0x1FBF0, 0x1FBF9},
};

// White space \s (the White_Space property): 10 ranges.
inline constexpr CodeRange kSpaceRanges[] = {
    {0x9, 0xD}, {0x20, 0x20}, {0x85, 0x85}, {0xA0, 0xA0}, {0x1680, 0x1680},
    {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
};

// Canonical combining classes other than 0: 333 ranges.
inline constexpr CombiningRange kCombiningRanges[] = {
    {0x300, 0x314, 230}, {0x315, 0x315, 232}, {0x316, 0x319, 220}, {0x31A, 0x31A, 232},
    {0x31B, 0x31B, 216}, {0x31C, 0x320, 220}, {0x321, 0x322, 202}, {0x323, 0x326, 220},
    {0x327, 0x328, 202}, {0x329, 0x333, 220}, {0x334, 0x338, 1}, {0x339, 0x33C, 220},
    {0x33D, 0x344, 230}, {0x345, 0x345, 240}, {0x346, 0x346, 230}, {0x347, 0x349, 220},
    {0x34A, 0x34C, 230}, {0x34D, 0x34E, 220}, {0x350, 0x352, 230}, {0x353, 0x356, 220},
    {0x357, 0x357, 230}, {0x358, 0x358, 232}, {0x359, 0x35A, 220}, {0x35B, 0x35B, 230},
    {0x35C, 0x35C, 233}, {0x35D, 0x35E, 234}, {0x35F, 0x35F, 233}, {0x360, 0x361, 234},
    {0x362, 0x362, 233}, {0x363, 0x36F, 230}, {0x483, 0x487, 230}, {0x591, 0x591, 220},
    {0x592, 0x595, 230}, {0x596, 0x596, 220}, {0x597, 0x599, 230}, {0x59A, 0x59A, 222},
    {0x59B, 0x59B, 220}, {0x59C, 0x5A1, 230}, {0x5A2, 0x5A7, 220}, {0x5A8, 0x5A9, 230},
    {0x5AA, 0x5AA, 220}, {0x5AB, 0x5AC, 230}, {0x5AD, 0x5AD, 222}, {0x5AE, 0x5AE, 228},
    {0x5AF, 0x5AF, 230}, {0x5B0, 0x5B0, 10}, {0x5B1, 0x5B1, 11}, {0x5B2, 0x5B2, 12},
    {0x5B3, 0x5B3, 13}, {0x5B4, 0x5B4, 14}, {0x5B5, 0x5B5, 15}, {0x5B6, 0x5B6, 16},
    {0x5B7, 0x5B7, 17}, {0x5B8, 0x5B8, 18}, {0x5B9, 0x5BA, 19}, {0x5BB, 0x5BB, 20},
    {0x5BC, 0x5BC, 21}, {0x5BD, 0x5BD, 22}, {0x5BF, 0x5BF, 23}, {0x5C1, 0x5C1, 24},
    {0x5C2, 0x5C2, 25}, {0x5C4, 0x5C4, 230}, {0x5C5, 0x5C5, 220}, {0x5C7, 0x5C7, 18},
    {0x610, 0x617, 230}, {0x618, 0x618, 30}, {0x619, 0x619, 31}, {0x61A, 0x61A, 32},
    {0x64B, 0x64B, 27}, {0x64C, 0x64C, 28}, {0x64D, 0x64D, 29}, {0x64E, 0x64E, 30},
    {0x64F, 0x64F, 31}, {0x650, 0x650, 32}, {0x651, 0x651, 33}, {0x652, 0x652, 34},
    {0x653, 0x654, 230}, {0x655, 0x656, 220}, {0x657, 0x65B, 230}, {0x65C, 0x65C, 220},
    {0x65D, 0x65E, 230}, {0x65F, 0x65F, 220}, {0x670, 0x670, 35}, {0x6D6, 0x6DC, 230},
    {0x6DF, 0x6E2, 230}, {0x6E3, 0x6E3, 220}, {0x6E4, 0x6E4, 230}, {0x6E7, 0x6E8, 230},
    {0x6EA, 0x6EA, 220}, {0x6EB, 0x6EC, 230}, {0x6ED, 0x6ED, 220}, {0x711, 0x711, 36},
    {0x730, 0x730, 230}, {0x731, 0x731, 220}, {0x732, 0x733, 230}, {0x734, 0x734, 220},
    {0x735, 0x736, 230}, {0x737, 0x739, 220}, {0x73A, 0x73A, 230}, {0x73B, 0x73C, 220},
    {0x73D, 0x73D, 230}, {0x73E, 0x73E, 220}, {0x73F, 0x741, 230}, {0x742, 0x742, 220},
    {0x743, 0x743, 230}, {0x744, 0x744, 220}, {0x745, 0x745, 230}, {0x746, 0x746, 220},
    {0x747, 0x747, 230}, {0x748, 0x748, 220}, {0x749, 0x74A, 230}, {0x7EB, 0x7F1, 230},
    {0x7F2, 0x7F2, 220}, {0x7F3, 0x7F3, 230}, {0x816, 0x819, 230}, {0x81B, 0x823, 230},
    {0x825, 0x827, 230}, {0x829, 0x82D, 230}, {0x859, 0x85B, 220}, {0x8D4, 0x8E1, 230},
    {0x8E3, 0x8E3, 220}, {0x8E4, 0x8E5, 230}, {0x8E6, 0x8E6, 220}, {0x8E7, 0x8E8, 230},
    {0x8E9, 0x8E9, 220}, {0x8EA, 0x8EC, 230}, {0x8ED, 0x8EF, 220}, {0x8F0, 0x8F0, 27},
    {0x8F1, 0x8F1, 28}, {0x8F2, 0x8F2, 29}, {0x8F3, 0x8F5, 230}, {0x8F6, 0x8F6, 220},
    {0x8F7, 0x8F8, 230}, {0x8F9, 0x8FA, 220}, {0x8FB, 0x8FF, 230}, {0x93C, 0x93C, 7},
    {0x94D, 0x94D, 9}, {0x951, 0x951, 230}, {0x952, 0x952, 220}, {0x953, 0x954, 230},
    {0x9BC, 0x9BC, 7}, {0x9CD, 0x9CD, 9}, {0xA3C, 0xA3C, 7}, {0xA4D, 0xA4D, 9},
    {0xABC, 0xABC, 7}, {0xACD, 0xACD, 9}, {0xB3C, 0xB3C, 7}, {0xB4D, 0xB4D, 9},
    {0xBCD, 0xBCD, 9}, {0xC4D, 0xC4D, 9}, {0xC55, 0xC55, 84}, {0xC56, 0xC56, 91},
    {0xCBC, 0xCBC, 7}, {0xCCD, 0xCCD, 9}, {0xD4D, 0xD4D, 9}, {0xDCA, 0xDCA, 9},
    {0xE38, 0xE39, 103}, {0xE3A, 0xE3A, 9}, {0xE48, 0xE4B, 107}, {0xEB8, 0xEB9, 118},
    {0xEC8, 0xECB, 122}, {0xF18, 0xF19, 220}, {0xF35, 0xF35, 220}, {0xF37, 0xF37, 220},
    {0xF39, 0xF39, 216}, {0xF71, 0xF71, 129}, {0xF72, 0xF72, 130}, {0xF74, 0xF74, 132},
    {0xF7A, 0xF7D, 130}, {0xF80, 0xF80, 130}, {0xF82, 0xF83, 230}, {0xF84, 0xF84, 9},
    {0xF86, 0xF87, 230}, {0xFC6, 0xFC6, 220}, {0x1037, 0x1037, 7}, {0x1039, 0x103A, 9},
    {0x108D, 0x108D, 220}, {0x135D, 0x135F, 230}, {0x1714, 0x1714, 9}, {0x1734, 0x1734, 9},
    {0x17D2, 0x17D2, 9}, {0x17DD, 0x17DD, 230}, {0x18A9, 0x18A9, 228}, {0x1939, 0x1939, 222},
    {0x193A, 0x193A, 230}, {0x193B, 0x193B, 220}, {0x1A17, 0x1A17, 230}, {0x1A18, 0x1A18, 220},
    {0x1A60, 0x1A60, 9}, {0x1A75, 0x1A7C, 230}, {0x1A7F, 0x1A7F, 220}, {0x1AB0, 0x1AB4, 230},
    {0x1AB5, 0x1ABA, 220}, {0x1ABB, 0x1ABC, 230}, {0x1ABD, 0x1ABD, 220}, {0x1B34, 0x1B34, 7},
    {0x1B44, 0x1B44, 9}, {0x1B6B, 0x1B6B, 230}, {0x1B6C, 0x1B6C, 220}, {0x1B6D, 0x1B73, 230},
    {0x1BAA, 0x1BAB, 9}, {0x1BE6, 0x1BE6, 7}, {0x1BF2, 0x1BF3, 9}, {0x1C37, 0x1C37, 7},
    {0x1CD0, 0x1CD2, 230}, {0x1CD4, 0x1CD4, 1}, {0x1CD5, 0x1CD9, 220}, {0x1CDA, 0x1CDB, 230},
    {0x1CDC, 0x1CDF, 220}, {0x1CE0, 0x1CE0, 230}, {0x1CE2, 0x1CE8, 1}, {0x1CED, 0x1CED, 220},
    {0x1CF4, 0x1CF4, 230}, {0x1CF8, 0x1CF9, 230}, {0x1DC0, 0x1DC1, 230}, {0x1DC2, 0x1DC2, 220},
    {0x1DC3, 0x1DC9, 230}, {0x1DCA, 0x1DCA, 220}, {0x1DCB, 0x1DCC, 230}, {0x1DCD, 0x1DCD, 234},
    {0x1DCE, 0x1DCE, 214}, {0x1DCF, 0x1DCF, 220}, {0x1DD0, 0x1DD0, 202}, {0x1DD1, 0x1DF5, 230},
    {0x1DFB, 0x1DFB, 230}, {0x1DFC, 0x1DFC, 233}, {0x1DFD, 0x1DFD, 220}, {0x1DFE, 0x1DFE, 230},
    {0x1DFF, 0x1DFF, 220}, {0x20D0, 0x20D1, 230}, {0x20D2, 0x20D3, 1}, {0x20D4, 0x20D7, 230},
    {0x20D8, 0x20DA, 1}, {0x20DB, 0x20DC, 230}, {0x20E1, 0x20E1, 230}, {0x20E5, 0x20E6, 1},
    {0x20E7, 0x20E7, 230}, {0x20E8, 0x20E8, 220}, {0x20E9, 0x20E9, 230}, {0x20EA, 0x20EB, 1},
    {0x20EC, 0x20EF, 220}, {0x20F0, 0x20F0, 230}, {0x2CEF, 0x2CF1, 230}, {0x2D7F, 0x2D7F, 9},
    {0x2DE0, 0x2DFF, 230}, {0x302A, 0x302A, 218}, {0x302B, 0x302B, 228}, {0x302C, 0x302C, 232},
    {0x302D, 0x302D, 222}, {0x302E, 0x302F, 224}, {0x3099, 0x309A, 8}, {0xA66F, 0xA66F, 230},
    {0xA674, 0xA67D, 230}, {0xA69E, 0xA69F, 230}, {0xA6F0, 0xA6F1, 230}, {0xA806, 0xA806, 9},
    {0xA8C4, 0xA8C4, 9}, {0xA8E0, 0xA8F1, 230}, {0xA92B, 0xA92D, 220}, {0xA953, 0xA953, 9},
    {0xA9B3, 0xA9B3, 7}, {0xA9C0, 0xA9C0, 9}, {0xAAB0, 0xAAB0, 230}, {0xAAB2, 0xAAB3, 230},
    {0xAAB4, 0xAAB4, 220}, {0xAAB7, 0xAAB8, 230}, {0xAABE, 0xAABF, 230}, {0xAAC1, 0xAAC1, 230},
    {0xAAF6, 0xAAF6, 9}, {0xABED, 0xABED, 9}, {0xFB1E, 0xFB1E, 26}, {0xFE20, 0xFE26, 230},
    {0xFE27, 0xFE2D, 220}, {0xFE2E, 0xFE2F, 230}, {0x101FD, 0x101FD, 220}, {0x102E0, 0x102E0, 220},
    {0x10376, 0x1037A, 230}, {0x10A0D, 0x10A0D, 220}, {0x10A0F, 0x10A0F, 230}, {0x10A38, 0x10A38, 230},
    {0x10A39, 0x10A39, 1}, {0x10A3A, 0x10A3A, 220}, {0x10A3F, 0x10A3F, 9}, {0x10AE5, 0x10AE5, 230},
    {0x10AE6, 0x10AE6, 220}, {0x11046, 0x11046, 9}, {0x1107F, 0x1107F, 9}, {0x110B9, 0x110B9, 9},
    {0x110BA, 0x110BA, 7}, {0x11100, 0x11102, 230}, {0x11133, 0x11134, 9}, {0x11173, 0x11173, 7},
    {0x111C0, 0x111C0, 9}, {0x111CA, 0x111CA, 7}, {0x11235, 0x11235, 9}, {0x11236, 0x11236, 7},
    {0x112E9, 0x112E9, 7}, {0x112EA, 0x112EA, 9}, {0x1133C, 0x1133C, 7}, {0x1134D, 0x1134D, 9},
    {0x11366, 0x1136C, 230}, {0x11370, 0x11374, 230}, {0x11442, 0x11442, 9}, {0x11446, 0x11446, 7},
    {0x114C2, 0x114C2, 9}, {0x114C3, 0x114C3, 7}, {0x115BF, 0x115BF, 9}, {0x115C0, 0x115C0, 7},
    {0x1163F, 0x1163F, 9}, {0x116B6, 0x116B6, 9}, {0x116B7, 0x116B7, 7}, {0x1172B, 0x1172B, 9},
    {0x11C3F, 0x11C3F, 9}, {0x16AF0, 0x16AF4, 1}, {0x16B30, 0x16B36, 230}, {0x1BC9E, 0x1BC9E, 1},
    {0x1D165, 0x1D166, 216}, {0x1D167, 0x1D169, 1}, {0x1D16D, 0x1D16D, 226}, {0x1D16E, 0x1D172, 216},
    {0x1D17B, 0x1D182, 220}, {0x1D185, 0x1D189, 230}, {0x1D18A, 0x1D18B, 220}, {0x1D1AA, 0x1D1AD, 230},
    {0x1D242, 0x1D244, 230}, {0x1E000, 0x1E006, 230}, {0x1E008, 0x1E018, 230}, {0x1E01B, 0x1E021, 230},
    {0x1E023, 0x1E024, 230}, {0x1E026, 0x1E02A, 230}, {0x1E8D0, 0x1E8D6, 220}, {0x1E944, 0x1E949, 230},
    {0x1E94A, 0x1E94A, 7},
};

// Full canonical decompositions (applied recursively already), Hangul syllables excluded
// (2060 characters): code point, offset and length in kDecompositionData.
inline constexpr Decomposition kDecompositions[] = {
    {0xC0, 0, 2}, {0xC1, 2, 2}, {0xC2, 4, 2}, {0xC3, 6, 2}, {0xC4, 8, 2},
    {0xC5, 10, 2}, {0xC7, 12, 2}, {0xC8, 14, 2}, {0xC9, 16, 2}, {0xCA, 18, 2},
    {0xCB, 20, 2}, {0xCC, 22, 2}, {0xCD, 24, 2}, {0xCE, 26, 2}, {0xCF, 28, 2},
    {0xD1, 30, 2}, {0xD2, 32, 2}, {0xD3, 34, 2}, {0xD4, 36, 2}, {0xD5, 38, 2},
    {0xD6, 40, 2}, {0xD9, 42, 2}, {0xDA, 44, 2}, {0xDB, 46, 2}, {0xDC, 48, 2},
    {0xDD, 50, 2}, {0xE0, 52, 2}, {0xE1, 54, 2}, {0xE2, 56, 2}, {0xE3, 58, 2},
    {0xE4, 60, 2}, {0xE5, 62, 2}, {0xE7, 64, 2}, {0xE8, 66, 2}, {0xE9, 68, 2},
    {0xEA, 70, 2}, {0xEB, 72, 2}, {0xEC, 74, 2}, {0xED, 76, 2}, {0xEE, 78, 2},
    {0xEF, 80, 2}, {0xF1, 82, 2}, {0xF2, 84, 2}, {0xF3, 86, 2}, {0xF4, 88, 2},
    {0xF5, 90, 2}, {0xF6, 92, 2}, {0xF9, 94, 2}, {0xFA, 96, 2}, {0xFB, 98, 2},
    {0xFC, 100, 2}, {0xFD, 102, 2}, {0xFF, 104, 2}, {0x100, 106, 2}, {0x101, 108, 2},
    {0x102, 110, 2}, {0x103, 112, 2}, {0x104, 114, 2}, {0x105, 116, 2}, {0x106, 118, 2},
    {0x107, 120, 2}, {0x108, 122, 2}, {0x109, 124, 2}, {0x10A, 126, 2}, {0x10B, 128, 2},
    {0x10C, 130, 2}, {0x10D, 132, 2}, {0x10E, 134, 2}, {0x10F, 136, 2}, {0x112, 138, 2},
    {0x113, 140, 2}, {0x114, 142, 2}, {0x115, 144, 2}, {0x116, 146, 2}, {0x117, 148, 2},
    {0x118, 150, 2}, {0x119, 152, 2}, {0x11A, 154, 2}, {0x11B, 156, 2}, {0x11C, 158, 2},
    {0x11D, 160, 2}, {0x11E, 162, 2}, {0x11F, 164, 2}, {0x120, 166, 2}, {0x121, 168, 2},
    {0x122, 170, 2}, {0x123, 172, 2}, {0x124, 174, 2}, {0x125, 176, 2}, {0x128, 178, 2},
    {0x129, 180, 2}, {0x12A, 182, 2}, {0x12B, 184, 2}, {0x12C, 186, 2}, {0x12D, 188, 2},
    {0x12E, 190, 2}, {0x12F, 192, 2}, {0x130, 194, 2}, {0x134, 196, 2}, {0x135, 198, 2},
    {0x136, 200, 2}, {0x137, 202, 2}, {0x139, 204, 2}, {0x13A, 206, 2}, {0x13B, 208, 2},
    {0x13C, 210, 2}, {0x13D, 212, 2}, {0x13E, 214, 2}, {0x143, 216, 2}, {0x144, 218, 2},
    {0x145, 220, 2}, {0x146, 222, 2}, {0x147, 224, 2}, {0x148, 226, 2}, {0x14C, 228, 2},
    {0x14D, 230, 2}, {0x14E, 232, 2}, {0x14F, 234, 2}, {0x150, 236, 2}, {0x151, 238, 2},
    {0x154, 240, 2}, {0x155, 242, 2}, {0x156, 244, 2}, {0x157, 246, 2}, {0x158, 248, 2},
    {0x159, 250, 2}, {0x15A, 252, 2}, {0x15B, 254, 2}, {0x15C, 256, 2}, {0x15D, 258, 2},
    {0x15E, 260, 2}, {0x15F, 262, 2}, {0x160, 264, 2}, {0x161, 266, 2}, {0x162, 268, 2},
    {0x163, 270, 2}, {0x164, 272, 2}, {0x165, 274, 2}, {0x168, 276, 2}, {0x169, 278, 2},
    {0x16A, 280, 2}, {0x16B, 282, 2}, {0x16C, 284, 2}, {0x16D, 286, 2}, {0x16E, 288, 2},
    {0x16F, 290, 2}, {0x170, 292, 2}, {0x171, 294, 2}, {0x172, 296, 2}, {0x173, 298, 2},
    {0x174, 300, 2}, {0x175, 302, 2}, {0x176, 304, 2}, {0x177, 306, 2}, {0x178, 308, 2},
    {0x179, 310, 2}, {0x17A, 312, 2}, {0x17B, 314, 2}, {0x17C, 316, 2}, {0x17D, 318, 2},
    {0x17E, 320, 2}, {0x1A0, 322, 2}, {0x1A1, 324, 2}, {0x1AF, 326, 2}, {0x1B0, 328, 2},
    {0x1CD, 330, 2}, {0x1CE, 332, 2}, {0x1CF, 334, 2}, {0x1D0, 336, 2}, {0x1D1, 338, 2},
    {0x1D2, 340, 2}, {0x1D3, 342, 2}, {0x1D4, 344, 2}, {0x1D5, 346, 3}, {0x1D6, 349, 3},
    {0x1D7, 352, 3}, {0x1D8, 355, 3}, {0x1D9, 358, 3}, {0x1DA, 361, 3}, {0x1DB, 364, 3},
    {0x1DC, 367, 3}, {0x1DE, 370, 3}, {0x1DF, 373, 3}, {0x1E0, 376, 3}, {0x1E1, 379, 3},
    {0x1E2, 382, 2}, {0x1E3, 384, 2}, {0x1E6, 386, 2}, {0x1E7, 388, 2}, {0x1E8, 390, 2},
    {0x1E9, 392, 2}, {0x1EA, 394, 2}, {0x1EB, 396, 2}, {0x1EC, 398, 3}, {0x1ED, 401, 3},
    {0x1EE, 404, 2}, {0x1EF, 406, 2}, {0x1F0, 408, 2}, {0x1F4, 410, 2}, {0x1F5, 412, 2},
    {0x1F8, 414, 2}, {0x1F9, 416, 2}, {0x1FA, 418, 3}, {0x1FB, 421, 3}, {0x1FC, 424, 2},
    {0x1FD, 426, 2}, {0x1FE, 428, 2}, {0x1FF, 430, 2}, {0x200, 432, 2}, {0x201, 434, 2},
    {0x202, 436, 2}, {0x203, 438, 2}, {0x204, 440, 2}, {0x205, 442, 2}, {0x206, 444, 2},
    {0x207, 446, 2}, {0x208, 448, 2}, {0x209, 450, 2}, {0x20A, 452, 2}, {0x20B, 454, 2},
    {0x20C, 456, 2}, {0x20D, 458, 2}, {0x20E, 460, 2}, {0x20F, 462, 2}, {0x210, 464, 2},
    {0x211, 466, 2}, {0x212, 468, 2}, {0x213, 470, 2}, {0x214, 472, 2}, {0x215, 474, 2},
    {0x216, 476, 2}, {0x217, 478, 2}, {0x218, 480, 2}, {0x219, 482, 2}, {0x21A, 484, 2},
    {0x21B, 486, 2}, {0x21E, 488, 2}, {0x21F, 490, 2}, {0x226, 492, 2}, {0x227, 494, 2},
    {0x228, 496, 2}, {0x229, 498, 2}, {0x22A, 500, 3}, {0x22B, 503, 3}, {0x22C, 506, 3},
    {0x22D, 509, 3}, {0x22E, 512, 2}, {0x22F, 514, 2}, {0x230, 516, 3}, {0x231, 519, 3},
    {0x232, 522, 2}, {0x233, 524, 2}, {0x340, 526, 1}, {0x341, 527, 1}, {0x343, 528, 1},
    {0x344, 529, 2}, {0x374, 531, 1}, {0x37E, 532, 1}, {0x385, 533, 2}, {0x386, 535, 2},
    {0x387, 537, 1}, {0x388, 538, 2}, {0x389, 540, 2}, {0x38A, 542, 2}, {0x38C, 544, 2},
    {0x38E, 546, 2}, {0x38F, 548, 2}, {0x390, 550, 3}, {0x3AA, 553, 2}, {0x3AB, 555, 2},
    {0x3AC, 557, 2}, {0x3AD, 559, 2}, {0x3AE, 561, 2}, {0x3AF, 563, 2}, {0x3B0, 565, 3},
    {0x3CA, 568, 2}, {0x3CB, 570, 2}, {0x3CC, 572, 2}, {0x3CD, 574, 2}, {0x3CE, 576, 2},
    {0x3D3, 578, 2}, {0x3D4, 580, 2}, {0x400, 582, 2}, {0x401, 584, 2}, {0x403, 586, 2},
    {0x407, 588, 2}, {0x40C, 590, 2}, {0x40D, 592, 2}, {0x40E, 594, 2}, {0x419, 596, 2},
    {0x439, 598, 2}, {0x450, 600, 2}, {0x451, 602, 2}, {0x453, 604, 2}, {0x457, 606, 2},
    {0x45C, 608, 2}, {0x45D, 610, 2}, {0x45E, 612, 2}, {0x476, 614, 2}, {0x477, 616, 2},
    {0x4C1, 618, 2}, {0x4C2, 620, 2}, {0x4D0, 622, 2}, {0x4D1, 624, 2}, {0x4D2, 626, 2},
    {0x4D3, 628, 2}, {0x4D6, 630, 2}, {0x4D7, 632, 2}, {0x4DA, 634, 2}, {0x4DB, 636, 2},
    {0x4DC, 638, 2}, {0x4DD, 640, 2}, {0x4DE, 642, 2}, {0x4DF, 644, 2}, {0x4E2, 646, 2},
    {0x4E3, 648, 2}, {0x4E4, 650, 2}, {0x4E5, 652, 2}, {0x4E6, 654, 2}, {0x4E7, 656, 2},
    {0x4EA, 658, 2}, {0x4EB, 660, 2}, {0x4EC, 662, 2}, {0x4ED, 664, 2}, {0x4EE, 666, 2},
    {0x4EF, 668, 2}, {0x4F0, 670, 2}, {0x4F1, 672, 2}, {0x4F2, 674, 2}, {0x4F3, 676, 2},
    {0x4F4, 678, 2}, {0x4F5, 680, 2}, {0x4F8, 682, 2}, {0x4F9, 684, 2}, {0x622, 686, 2},
    {0x623, 688, 2}, {0x624, 690, 2}, {0x625, 692, 2}, {0x626, 694, 2}, {0x6C0, 696, 2},
    {0x6C2, 698, 2}, {0x6D3, 700, 2}, {0x929, 702, 2}, {0x931, 704, 2}, {0x934, 706, 2},
    {0x958, 708, 2}, {0x959, 710, 2}, {0x95A, 712, 2}, {0x95B, 714, 2}, {0x95C, 716, 2},
    {0x95D, 718, 2}, {0x95E, 720, 2}, {0x95F, 722, 2}, {0x9CB, 724, 2}, {0x9CC, 726, 2},
    {0x9DC, 728, 2}, {0x9DD, 730, 2}, {0x9DF, 732, 2}, {0xA33, 734, 2}, {0xA36, 736, 2},
    {0xA59, 738, 2}, {0xA5A, 740, 2}, {0xA5B, 742, 2}, {0xA5E, 744, 2}, {0xB48, 746, 2},
    {0xB4B, 748, 2}, {0xB4C, 750, 2}, {0xB5C, 752, 2}, {0xB5D, 754, 2}, {0xB94, 756, 2},
    {0xBCA, 758, 2}, {0xBCB, 760, 2}, {0xBCC, 762, 2}, {0xC48, 764, 2}, {0xCC0, 766, 2},
    {0xCC7, 768, 2}, {0xCC8, 770, 2}, {0xCCA, 772, 2}, {0xCCB, 774, 3}, {0xD4A, 777, 2},
    {0xD4B, 779, 2}, {0xD4C, 781, 2}, {0xDDA, 783, 2}, {0xDDC, 785, 2}, {0xDDD, 787, 3},
    {0xDDE, 790, 2}, {0xF43, 792, 2}, {0xF4D, 794, 2}, {0xF52, 796, 2}, {0xF57, 798, 2},
    {0xF5C, 800, 2}, {0xF69, 802, 2}, {0xF73, 804, 2}, {0xF75, 806, 2}, {0xF76, 808, 2},
    {0xF78, 810, 2}, {0xF81, 812, 2}, {0xF93, 814, 2}, {0xF9D, 816, 2}, {0xFA2, 818, 2},
    {0xFA7, 820, 2}, {0xFAC, 822, 2}, {0xFB9, 824, 2}, {0x1026, 826, 2}, {0x1B06, 828, 2},
    {0x1B08, 830, 2}, {0x1B0A, 832, 2}, {0x1B0C, 834, 2}, {0x1B0E, 836, 2}, {0x1B12, 838, 2},
    {0x1B3B, 840, 2}, {0x1B3D, 842, 2}, {0x1B40, 844, 2}, {0x1B41, 846, 2}, {0x1B43, 848, 2},
    {0x1E00, 850, 2}, {0x1E01, 852, 2}, {0x1E02, 854, 2}, {0x1E03, 856, 2}, {0x1E04, 858, 2},
    {0x1E05, 860, 2}, {0x1E06, 862, 2}, {0x1E07, 864, 2}, {0x1E08, 866, 3}, {0x1E09, 869, 3},
    {0x1E0A, 872, 2}, {0x1E0B, 874, 2}, {0x1E0C, 876, 2}, {0x1E0D, 878, 2}, {0x1E0E, 880, 2},
    {0x1E0F, 882, 2}, {0x1E10, 884, 2}, {0x1E11, 886, 2}, {0x1E12, 888, 2}, {0x1E13, 890, 2},
    {0x1E14, 892, 3}, {0x1E15, 895, 3}, {0x1E16, 898, 3}, {0x1E17, 901, 3}, {0x1E18, 904, 2},
    {0x1E19, 906, 2}, {0x1E1A, 908, 2}, {0x1E1B, 910, 2}, {0x1E1C, 912, 3}, {0x1E1D, 915, 3},
    {0x1E1E, 918, 2}, {0x1E1F, 920, 2}, {0x1E20, 922, 2}, {0x1E21, 924, 2}, {0x1E22, 926, 2},
    {0x1E23, 928, 2}, {0x1E24, 930, 2}, {0x1E25, 932, 2}, {0x1E26, 934, 2}, {0x1E27, 936, 2},
    {0x1E28, 938, 2}, {0x1E29, 940, 2}, {0x1E2A, 942, 2}, {0x1E2B, 944, 2}, {0x1E2C, 946, 2},
    {0x1E2D, 948, 2}, {0x1E2E, 950, 3}, {0x1E2F, 953, 3}, {0x1E30, 956, 2}, {0x1E31, 958, 2},
    {0x1E32, 960, 2}, {0x1E33, 962, 2}, {0x1E34, 964, 2}, {0x1E35, 966, 2}, {0x1E36, 968, 2},
    {0x1E37, 970, 2}, {0x1E38, 972, 3}, {0x1E39, 975, 3}, {0x1E3A, 978, 2}, {0x1E3B, 980, 2},
    {0x1E3C, 982, 2}, {0x1E3D, 984, 2}, {0x1E3E, 986, 2}, {0x1E3F, 988, 2}, {0x1E40, 990, 2},
    {0x1E41, 992, 2}, {0x1E42, 994, 2}, {0x1E43, 996, 2}, {0x1E44, 998, 2}, {0x1E45, 1000, 2},
    {0x1E46, 1002, 2}, {0x1E47, 1004, 2}, {0x1E48, 1006, 2}, {0x1E49, 1008, 2}, {0x1E4A, 1010, 2},
    {0x1E4B, 1012, 2}, {0x1E4C, 1014, 3}, {0x1E4D, 1017, 3}, {0x1E4E, 1020, 3}, {0x1E4F, 1023, 3},
    {0x1E50, 1026, 3}, {0x1E51, 1029, 3}, {0x1E52, 1032, 3}, {0x1E53, 1035, 3}, {0x1E54, 1038, 2},
    {0x1E55, 1040, 2}, {0x1E56, 1042, 2}, {0x1E57, 1044, 2}, {0x1E58, 1046, 2}, {0x1E59, 1048, 2},
    {0x1E5A, 1050, 2}, {0x1E5B, 1052, 2}, {0x1E5C, 1054, 3}, {0x1E5D, 1057, 3}, {0x1E5E, 1060, 2},
    {0x1E5F, 1062, 2}, {0x1E60, 1064, 2}, {0x1E61, 1066, 2}, {0x1E62, 1068, 2}, {0x1E63, 1070, 2},
    {0x1E64, 1072, 3}, {0x1E65, 1075, 3}, {0x1E66, 1078, 3}, {0x1E67, 1081, 3}, {0x1E68, 1084, 3},
    {0x1E69, 1087, 3}, {0x1E6A, 1090, 2}, {0x1E6B, 1092, 2}, {0x1E6C, 1094, 2}, {0x1E6D, 1096, 2},
    {0x1E6E, 1098, 2}, {0x1E6F, 1100, 2}, {0x1E70, 1102, 2}, {0x1E71, 1104, 2}, {0x1E72, 1106, 2},
    {0x1E73, 1108, 2}, {0x1E74, 1110, 2}, {0x1E75, 1112, 2}, {0x1E76, 1114, 2}, {0x1E77, 1116, 2},
    {0x1E78, 1118, 3}, {0x1E79, 1121, 3}, {0x1E7A, 1124, 3}, {0x1E7B, 1127, 3}, {0x1E7C, 1130, 2},
    {0x1E7D, 1132, 2}, {0x1E7E, 1134, 2}, {0x1E7F, 1136, 2}, {0x1E80, 1138, 2}, {0x1E81, 1140, 2},
    {0x1E82, 1142, 2}, {0x1E83, 1144, 2}, {0x1E84, 1146, 2}, {0x1E85, 1148, 2}, {0x1E86, 1150, 2},
    {0x1E87, 1152, 2}, {0x1E88, 1154, 2}, {0x1E89, 1156, 2}, {0x1E8A, 1158, 2}, {0x1E8B, 1160, 2},
    {0x1E8C, 1162, 2}, {0x1E8D, 1164, 2}, {0x1E8E, 1166, 2}, {0x1E8F, 1168, 2}, {0x1E90, 1170, 2},
    {0x1E91, 1172, 2}, {0x1E92, 1174, 2}, {0x1E93, 1176, 2}, {0x1E94, 1178, 2}, {0x1E95, 1180, 2},
    {0x1E96, 1182, 2}, {0x1E97, 1184, 2}, {0x1E98, 1186, 2}, {0x1E99, 1188, 2}, {0x1E9B, 1190, 2},
    {0x1EA0, 1192, 2}, {0x1EA1, 1194, 2}, {0x1EA2, 1196, 2}, {0x1EA3, 1198, 2}, {0x1EA4, 1200, 3},
    {0x1EA5, 1203, 3}, {0x1EA6, 1206, 3}, {0x1EA7, 1209, 3}, {0x1EA8, 1212, 3}, {0x1EA9, 1215, 3},
    {0x1EAA, 1218, 3}, {0x1EAB, 1221, 3}, {0x1EAC, 1224, 3}, {0x1EAD, 1227, 3}, {0x1EAE, 1230, 3},
    {0x1EAF, 1233, 3}, {0x1EB0, 1236, 3}, {0x1EB1, 1239, 3}, {0x1EB2, 1242, 3}, {0x1EB3, 1245, 3},
    {0x1EB4, 1248, 3}, {0x1EB5, 1251, 3}, {0x1EB6, 1254, 3}, {0x1EB7, 1257, 3}, {0x1EB8, 1260, 2},
    {0x1EB9, 1262, 2}, {0x1EBA, 1264, 2}, {0x1EBB, 1266, 2}, {0x1EBC, 1268, 2}, {0x1EBD, 1270, 2},
    {0x1EBE, 1272, 3}, {0x1EBF, 1275, 3}, {0x1EC0, 1278, 3}, {0x1EC1, 1281, 3}, {0x1EC2, 1284, 3},
    {0x1EC3, 1287, 3}, {0x1EC4, 1290, 3}, {0x1EC5, 1293, 3}, {0x1EC6, 1296, 3}, {0x1EC7, 1299, 3},
    {0x1EC8, 1302, 2}, {0x1EC9, 1304, 2}, {0x1ECA, 1306, 2}, {0x1ECB, 1308, 2}, {0x1ECC, 1310, 2},
    {0x1ECD, 1312, 2}, {0x1ECE, 1314, 2}, {0x1ECF, 1316, 2}, {0x1ED0, 1318, 3}, {0x1ED1, 1321, 3},
    {0x1ED2, 1324, 3}, {0x1ED3, 1327, 3}, {0x1ED4, 1330, 3}, {0x1ED5, 1333, 3}, {0x1ED6, 1336, 3},
    {0x1ED7, 1339, 3}, {0x1ED8, 1342, 3}, {0x1ED9, 1345, 3}, {0x1EDA, 1348, 3}, {0x1EDB, 1351, 3},
    {0x1EDC, 1354, 3}, {0x1EDD, 1357, 3}, {0x1EDE, 1360, 3}, {0x1EDF, 1363, 3}, {0x1EE0, 1366, 3},
    {0x1EE1, 1369, 3}, {0x1EE2, 1372, 3}, {0x1EE3, 1375, 3}, {0x1EE4, 1378, 2}, {0x1EE5, 1380, 2},
    {0x1EE6, 1382, 2}, {0x1EE7, 1384, 2}, {0x1EE8, 1386, 3}, {0x1EE9, 1389, 3}, {0x1EEA, 1392, 3},
    {0x1EEB, 1395, 3}, {0x1EEC, 1398, 3}, {0x1EED, 1401, 3}, {0x1EEE, 1404, 3}, {0x1EEF, 1407, 3},
    {0x1EF0, 1410, 3}, {0x1EF1, 1413, 3}, {0x1EF2, 1416, 2}, {0x1EF3, 1418, 2}, {0x1EF4, 1420, 2},
    {0x1EF5, 1422, 2}, {0x1EF6, 1424, 2}, {0x1EF7, 1426, 2}, {0x1EF8, 1428, 2}, {0x1EF9, 1430, 2},
    {0x1F00, 1432, 2}, {0x1F01, 1434, 2}, {0x1F02, 1436, 3}, {0x1F03, 1439, 3}, {0x1F04, 1442, 3},
    {0x1F05, 1445, 3}, {0x1F06, 1448, 3}, {0x1F07, 1451, 3}, {0x1F08, 1454, 2}, {0x1F09, 1456, 2},
    {0x1F0A, 1458, 3}, {0x1F0B, 1461, 3}, {0x1F0C, 1464, 3}, {0x1F0D, 1467, 3}, {0x1F0E, 1470, 3},
    {0x1F0F, 1473, 3}, {0x1F10, 1476, 2}, {0x1F11, 1478, 2}, {0x1F12, 1480, 3}, {0x1F13, 1483, 3},
    {0x1F14, 1486, 3}, {0x1F15, 1489, 3}, {0x1F18, 1492, 2}, {0x1F19, 1494, 2}, {0x1F1A, 1496, 3},
    {0x1F1B, 1499, 3}, {0x1F1C, 1502, 3}, {0x1F1D, 1505, 3}, {0x1F20, 1508, 2}, {0x1F21, 1510, 2},
    {0x1F22, 1512, 3}, {0x1F23, 1515, 3}, {0x1F24, 1518, 3}, {0x1F25, 1521, 3}, {0x1F26, 1524, 3},
    {0x1F27, 1527, 3}, {0x1F28, 1530, 2}, {0x1F29, 1532, 2}, {0x1F2A, 1534, 3}, {0x1F2B, 1537, 3},
    {0x1F2C, 1540, 3}, {0x1F2D, 1543, 3}, {0x1F2E, 1546, 3}, {0x1F2F, 1549, 3}, {0x1F30, 1552, 2},
    {0x1F31, 1554, 2}, {0x1F32, 1556, 3}, {0x1F33, 1559, 3}, {0x1F34, 1562, 3}, {0x1F35, 1565, 3},
    {0x1F36, 1568, 3}, {0x1F37, 1571, 3}, {0x1F38, 1574, 2}, {0x1F39, 1576, 2}, {0x1F3A, 1578, 3},
    {0x1F3B, 1581, 3}, {0x1F3C, 1584, 3}, {0x1F3D, 1587, 3}, {0x1F3E, 1590, 3}, {0x1F3F, 1593, 3},
    {0x1F40, 1596, 2}, {0x1F41, 1598, 2}, {0x1F42, 1600, 3}, {0x1F43, 1603, 3}, {0x1F44, 1606, 3},
    {0x1F45, 1609, 3}, {0x1F48, 1612, 2}, {0x1F49, 1614, 2}, {0x1F4A, 1616, 3}, {0x1F4B, 1619, 3},
    {0x1F4C, 1622, 3}, {0x1F4D, 1625, 3}, {0x1F50, 1628, 2}, {0x1F51, 1630, 2}, {0x1F52, 1632, 3},
    {0x1F53, 1635, 3}, {0x1F54, 1638, 3}, {0x1F55, 1641, 3}, {0x1F56, 1644, 3}, {0x1F57, 1647, 3},
    {0x1F59, 1650, 2}, {0x1F5B, 1652, 3}, {0x1F5D, 1655, 3}, {0x1F5F, 1658, 3}, {0x1F60, 1661, 2},
    {0x1F61, 1663, 2}, {0x1F62, 1665, 3}, {0x1F63, 1668, 3}, {0x1F64, 1671, 3}, {0x1F65, 1674, 3},
    {0x1F66, 1677, 3}, {0x1F67, 1680, 3}, {0x1F68, 1683, 2}, {0x1F69, 1685, 2}, {0x1F6A, 1687, 3},
    {0x1F6B, 1690, 3}, {0x1F6C, 1693, 3}, {0x1F6D, 1696, 3}, {0x1F6E, 1699, 3}, {0x1F6F, 1702, 3},
    {0x1F70, 1705, 2}, {0x1F71, 1707, 2}, {0x1F72, 1709, 2}, {0x1F73, 1711, 2}, {0x1F74, 1713, 2},
    {0x1F75, 1715, 2}, {0x1F76, 1717, 2}, {0x1F77, 1719, 2}, {0x1F78, 1721, 2}, {0x1F79, 1723, 2},
    {0x1F7A, 1725, 2}, {0x1F7B, 1727, 2}, {0x1F7C, 1729, 2}, {0x1F7D, 1731, 2}, {0x1F80, 1733, 3},
    {0x1F81, 1736, 3}, {0x1F82, 1739, 4}, {0x1F83, 1743, 4}, {0x1F84, 1747, 4}, {0x1F85, 1751, 4},
    {0x1F86, 1755, 4}, {0x1F87, 1759, 4}, {0x1F88, 1763, 3}, {0x1F89, 1766, 3}, {0x1F8A, 1769, 4},
    {0x1F8B, 1773, 4}, {0x1F8C, 1777, 4}, {0x1F8D, 1781, 4}, {0x1F8E, 1785, 4}, {0x1F8F, 1789, 4},
    {0x1F90, 1793, 3}, {0x1F91, 1796, 3}, {0x1F92, 1799, 4}, {0x1F93, 1803, 4}, {0x1F94, 1807, 4},
    {0x1F95, 1811, 4}, {0x1F96, 1815, 4}, {0x1F97, 1819, 4}, {0x1F98, 1823, 3}, {0x1F99, 1826, 3},
    {0x1F9A, 1829, 4}, {0x1F9B, 1833, 4}, {0x1F9C, 1837, 4}, {0x1F9D, 1841, 4}, {0x1F9E, 1845, 4},
    {0x1F9F, 1849, 4}, {0x1FA0, 1853, 3}, {0x1FA1, 1856, 3}, {0x1FA2, 1859, 4}, {0x1FA3, 1863, 4},
    {0x1FA4, 1867, 4}, {0x1FA5, 1871, 4}, {0x1FA6, 1875, 4}, {0x1FA7, 1879, 4}, {0x1FA8, 1883, 3},
    {0x1FA9, 1886, 3}, {0x1FAA, 1889, 4}, {0x1FAB, 1893, 4}, {0x1FAC, 1897, 4}, {0x1FAD, 1901, 4},
    {0x1FAE, 1905, 4}, {0x1FAF, 1909, 4}, {0x1FB0, 1913, 2}, {0x1FB1, 1915, 2}, {0x1FB2, 1917, 3},
    {0x1FB3, 1920, 2}, {0x1FB4, 1922, 3}, {0x1FB6, 1925, 2}, {0x1FB7, 1927, 3}, {0x1FB8, 1930, 2},
    {0x1FB9, 1932, 2}, {0x1FBA, 1934, 2}, {0x1FBB, 1936, 2}, {0x1FBC, 1938, 2}, {0x1FBE, 1940, 1},
    {0x1FC1, 1941, 2}, {0x1FC2, 1943, 3}, {0x1FC3, 1946, 2}, {0x1FC4, 1948, 3}, {0x1FC6, 1951, 2},
    {0x1FC7, 1953, 3}, {0x1FC8, 1956, 2}, {0x1FC9, 1958, 2}, {0x1FCA, 1960, 2}, {0x1FCB, 1962, 2},
    {0x1FCC, 1964, 2}, {0x1FCD, 1966, 2}, {0x1FCE, 1968, 2}, {0x1FCF, 1970, 2}, {0x1FD0, 1972, 2},
    {0x1FD1, 1974, 2}, {0x1FD2, 1976, 3}, {0x1FD3, 1979, 3}, {0x1FD6, 1982, 2}, {0x1FD7, 1984, 3},
    {0x1FD8, 1987, 2}, {0x1FD9, 1989, 2}, {0x1FDA, 1991, 2}, {0x1FDB, 1993, 2}, {0x1FDD, 1995, 2},
    {0x1FDE, 1997, 2}, {0x1FDF, 1999, 2}, {0x1FE0, 2001, 2}, {0x1FE1, 2003, 2}, {0x1FE2, 2005, 3},
    {0x1FE3, 2008, 3}, {0x1FE4, 2011, 2}, {0x1FE5, 2013, 2}, {0x1FE6, 2015, 2}, {0x1FE7, 2017, 3},
    {0x1FE8, 2020, 2}, {0x1FE9, 2022, 2}, {0x1FEA, 2024, 2}, {0x1FEB, 2026, 2}, {0x1FEC, 2028, 2},
    {0x1FED, 2030, 2}, {0x1FEE, 2032, 2}, {0x1FEF, 2034, 1}, {0x1FF2, 2035, 3}, {0x1FF3, 2038, 2},
    {0x1FF4, 2040, 3}, {0x1FF6, 2043, 2}, {0x1FF7, 2045, 3}, {0x1FF8, 2048, 2}, {0x1FF9, 2050, 2},
    {0x1FFA, 2052, 2}, {0x1FFB, 2054, 2}, {0x1FFC, 2056, 2}, {0x1FFD, 2058, 1}, {0x2000, 2059, 1},
    {0x2001, 2060, 1}, {0x2126, 2061, 1}, {0x212A, 2062, 1}, {0x212B, 2063, 2}, {0x219A, 2065, 2},
    {0x219B, 2067, 2}, {0x21AE, 2069, 2}, {0x21CD, 2071, 2}, {0x21CE, 2073, 2}, {0x21CF, 2075, 2},
    {0x2204, 2077, 2}, {0x2209, 2079, 2}, {0x220C, 2081, 2}, {0x2224, 2083, 2}, {0x2226, 2085, 2},
    {0x2241, 2087, 2}, {0x2244, 2089, 2}, {0x2247, 2091, 2}, {0x2249, 2093, 2}, {0x2260, 2095, 2},
    {0x2262, 2097, 2}, {0x226D, 2099, 2}, {0x226E, 2101, 2}, {0x226F, 2103, 2}, {0x2270, 2105, 2},
    {0x2271, 2107, 2}, {0x2274, 2109, 2}, {0x2275, 2111, 2}, {0x2278, 2113, 2}, {0x2279, 2115, 2},
    {0x2280, 2117, 2}, {0x2281, 2119, 2}, {0x2284, 2121, 2}, {0x2285, 2123, 2}, {0x2288, 2125, 2},
    {0x2289, 2127, 2}, {0x22AC, 2129, 2}, {0x22AD, 2131, 2}, {0x22AE, 2133, 2}, {0x22AF, 2135, 2},
    {0x22E0, 2137, 2}, {0x22E1, 2139, 2}, {0x22E2, 2141, 2}, {0x22E3, 2143, 2}, {0x22EA, 2145, 2},
    {0x22EB, 2147, 2}, {0x22EC, 2149, 2}, {0x22ED, 2151, 2}, {0x2329, 2153, 1}, {0x232A, 2154, 1},
    {0x2ADC, 2155, 2}, {0x304C, 2157, 2}, {0x304E, 2159, 2}, {0x3050, 2161, 2}, {0x3052, 2163, 2},
    {0x3054, 2165, 2}, {0x3056, 2167, 2}, {0x3058, 2169, 2}, {0x305A, 2171, 2}, {0x305C, 2173, 2},
    {0x305E, 2175, 2}, {0x3060, 2177, 2}, {0x3062, 2179, 2}, {0x3065, 2181, 2}, {0x3067, 2183, 2},
    {0x3069, 2185, 2}, {0x3070, 2187, 2}, {0x3071, 2189, 2}, {0x3073, 2191, 2}, {0x3074, 2193, 2},
    {0x3076, 2195, 2}, {0x3077, 2197, 2}, {0x3079, 2199, 2}, {0x307A, 2201, 2}, {0x307C, 2203, 2},
    {0x307D, 2205, 2}, {0x3094, 2207, 2}, {0x309E, 2209, 2}, {0x30AC, 2211, 2}, {0x30AE, 2213, 2},
    {0x30B0, 2215, 2}, {0x30B2, 2217, 2}, {0x30B4, 2219, 2}, {0x30B6, 2221, 2}, {0x30B8, 2223, 2},
    {0x30BA, 2225, 2}, {0x30BC, 2227, 2}, {0x30BE, 2229, 2}, {0x30C0, 2231, 2}, {0x30C2, 2233, 2},
    {0x30C5, 2235, 2}, {0x30C7, 2237, 2}, {0x30C9, 2239, 2}, {0x30D0, 2241, 2}, {0x30D1, 2243, 2},
    {0x30D3, 2245, 2}, {0x30D4, 2247, 2}, {0x30D6, 2249, 2}, {0x30D7, 2251, 2}, {0x30D9, 2253, 2},
    {0x30DA, 2255, 2}, {0x30DC, 2257, 2}, {0x30DD, 2259, 2}, {0x30F4, 2261, 2}, {0x30F7, 2263, 2},
    {0x30F8, 2265, 2}, {0x30F9, 2267, 2}, {0x30FA, 2269, 2}, {0x30FE, 2271, 2}, {0xF900, 2273, 1},
    {0xF901, 2274, 1}, {0xF902, 2275, 1}, {0xF903, 2276, 1}, {0xF904, 2277, 1}, {0xF905, 2278, 1},
    {0xF906, 2279, 1}, {0xF907, 2280, 1}, {0xF908, 2281, 1}, {0xF909, 2282, 1}, {0xF90A, 2283, 1},
    {0xF90B, 2284, 1}, {0xF90C, 2285, 1}, {0xF90D, 2286, 1}, {0xF90E, 2287, 1}, {0xF90F, 2288, 1},
    {0xF910, 2289, 1}, {0xF911, 2290, 1}, {0xF912, 2291, 1}, {0xF913, 2292, 1}, {0xF914, 2293, 1},
    {0xF915, 2294, 1}, {0xF916, 2295, 1}, {0xF917, 2296, 1}, {0xF918, 2297, 1}, {0xF919, 2298, 1},
    {0xF91A, 2299, 1}, {0xF91B, 2300, 1}, {0xF91C, 2301, 1}, {0xF91D, 2302, 1}, {0xF91E, 2303, 1},
    {0xF91F, 2304, 1}, {0xF920, 2305, 1}, {0xF921, 2306, 1}, {0xF922, 2307, 1}, {0xF923, 2308, 1},
    {0xF924, 2309, 1}, {0xF925, 2310, 1}, {0xF926, 2311, 1}, {0xF927, 2312, 1}, {0xF928, 2313, 1},
    {0xF929, 2314, 1}, {0xF92A, 2315, 1}, {0xF92B, 2316, 1}, {0xF92C, 2317, 1}, {0xF92D, 2318, 1},
    {0xF92E, 2319, 1}, {0xF92F, 2320, 1}, {0xF930, 2321, 1}, {0xF931, 2322, 1}, {0xF932, 2323, 1},
    {0xF933, 2324, 1}, {0xF934, 2325, 1}, {0xF935, 2326, 1}, {0xF936, 2327, 1}, {0xF937, 2328, 1},
    {0xF938, 2329, 1}, {0xF939, 2330, 1}, {0xF93A, 2331, 1}, {0xF93B, 2332, 1}, {0xF93C, 2333, 1},
    {0xF93D, 2334, 1}, {0xF93E, 2335, 1}, {0xF93F, 2336, 1}, {0xF940, 2337, 1}, {0xF941, 2338, 1},
    {0xF942, 2339, 1}, {0xF943, 2340, 1}, {0xF944, 2341, 1}, {0xF945, 2342, 1}, {0xF946, 2343, 1},
    {0xF947, 2344, 1}, {0xF948, 2345, 1}, {0xF949, 2346, 1}, {0xF94A, 2347, 1}, {0xF94B, 2348, 1},
    {0xF94C, 2349, 1}, {0xF94D, 2350, 1}, {0xF94E, 2351, 1}, {0xF94F, 2352, 1}, {0xF950, 2353, 1},
    {0xF951, 2354, 1}, {0xF952, 2355, 1}, {0xF953, 2356, 1}, {0xF954, 2357, 1}, {0xF955, 2358, 1},
    {0xF956, 2359, 1}, {0xF957, 2360, 1}, {0xF958, 2361, 1}, {0xF959, 2362, 1}, {0xF95A, 2363, 1},
    {0xF95B, 2364, 1}, {0xF95C, 2365, 1}, {0xF95D, 2366, 1}, {0xF95E, 2367, 1}, {0xF95F, 2368, 1},
    {0xF960, 2369, 1}, {0xF961, 2370, 1}, {0xF962, 2371, 1}, {0xF963, 2372, 1}, {0xF964, 2373, 1},
    {0xF965, 2374, 1}, {0xF966, 2375, 1}, {0xF967, 2376, 1}, {0xF968, 2377, 1}, {0xF969, 2378, 1},
    {0xF96A, 2379, 1}, {0xF96B, 2380, 1}, {0xF96C, 2381, 1}, {0xF96D, 2382, 1}, {0xF96E, 2383, 1},
    {0xF96F, 2384, 1}, {0xF970, 2385, 1}, {0xF971, 2386, 1}, {0xF972, 2387, 1}, {0xF973, 2388, 1},
    {0xF974, 2389, 1}, {0xF975, 2390, 1}, {0xF976, 2391, 1}, {0xF977, 2392, 1}, {0xF978, 2393, 1},
    {0xF979, 2394, 1}, {0xF97A, 2395, 1}, {0xF97B, 2396, 1}, {0xF97C, 2397, 1}, {0xF97D, 2398, 1},
    {0xF97E, 2399, 1}, {0xF97F, 2400, 1}, {0xF980, 2401, 1}, {0xF981, 2402, 1}, {0xF982, 2403, 1},
    {0xF983, 2404, 1}, {0xF984, 2405, 1}, {0xF985, 2406, 1}, {0xF986, 2407, 1}, {0xF987, 2408, 1},
    {0xF988, 2409, 1}, {0xF989, 2410, 1}, {0xF98A, 2411, 1}, {0xF98B, 2412, 1}, {0xF98C, 2413, 1},
    {0xF98D, 2414, 1}, {0xF98E, 2415, 1}, {0xF98F, 2416, 1}, {0xF990, 2417, 1}, {0xF991, 2418, 1},
    {0xF992, 2419, 1}, {0xF993, 2420, 1}, {0xF994, 2421, 1}, {0xF995, 2422, 1}, {0xF996, 2423, 1},
    {0xF997, 2424, 1}, {0xF998, 2425, 1}, {0xF999, 2426, 1}, {0xF99A, 2427, 1}, {0xF99B, 2428, 1},
    {0xF99C, 2429, 1}, {0xF99D, 2430, 1}, {0xF99E, 2431, 1}, {0xF99F, 2432, 1}, {0xF9A0, 2433, 1},
    {0xF9A1, 2434, 1}, {0xF9A2, 2435, 1}, {0xF9A3, 2436, 1}, {0xF9A4, 2437, 1}, {0xF9A5, 2438, 1},
    {0xF9A6, 2439, 1}, {0xF9A7, 2440, 1}, {0xF9A8, 2441, 1}, {0xF9A9, 2442, 1}, {0xF9AA, 2443, 1},
    {0xF9AB, 2444, 1}, {0xF9AC, 2445, 1}, {0xF9AD, 2446, 1}, {0xF9AE, 2447, 1}, {0xF9AF, 2448, 1},
    {0xF9B0, 2449, 1}, {0xF9B1, 2450, 1}, {0xF9B2, 2451, 1}, {0xF9B3, 2452, 1}, {0xF9B4, 2453, 1},
    {0xF9B5, 2454, 1}, {0xF9B6, 2455, 1}, {0xF9B7, 2456, 1}, {0xF9B8, 2457, 1}, {0xF9B9, 2458, 1},
    {0xF9BA, 2459, 1}, {0xF9BB, 2460, 1}, {0xF9BC, 2461, 1}, {0xF9BD, 2462, 1}, {0xF9BE, 2463, 1},
    {0xF9BF, 2464, 1}, {0xF9C0, 2465, 1}, {0xF9C1, 2466, 1}, {0xF9C2, 2467, 1}, {0xF9C3, 2468, 1},
    {0xF9C4, 2469, 1}, {0xF9C5, 2470, 1}, {0xF9C6, 2471, 1}, {0xF9C7, 2472, 1}, {0xF9C8, 2473, 1},
    {0xF9C9, 2474, 1}, {0xF9CA, 2475, 1}, {0xF9CB, 2476, 1}, {0xF9CC, 2477, 1}, {0xF9CD, 2478, 1},
    {0xF9CE, 2479, 1}, {0xF9CF, 2480, 1}, {0xF9D0, 2481, 1}, {0xF9D1, 2482, 1}, {0xF9D2, 2483, 1},
    {0xF9D3, 2484, 1}, {0xF9D4, 2485, 1}, {0xF9D5, 2486, 1}, {0xF9D6, 2487, 1}, {0xF9D7, 2488, 1},
    {0xF9D8, 2489, 1}, {0xF9D9, 2490, 1}, {0xF9DA, 2491, 1}, {0xF9DB, 2492, 1}, {0xF9DC, 2493, 1},
    {0xF9DD, 2494, 1}, {0xF9DE, 2495, 1}, {0xF9DF, 2496, 1}, {0xF9E0, 2497, 1}, {0xF9E1, 2498, 1},
    {0xF9E2, 2499, 1}, {0xF9E3, 2500, 1}, {0xF9E4, 2501, 1}, {0xF9E5, 2502, 1}, {0xF9E6, 2503, 1},
    {0xF9E7, 2504, 1}, {0xF9E8, 2505, 1}, {0xF9E9, 2506, 1}, {0xF9EA, 2507, 1}, {0xF9EB, 2508, 1},
    {0xF9EC, 2509, 1}, {0xF9ED, 2510, 1}, {0xF9EE, 2511, 1}, {0xF9EF, 2512, 1}, {0xF9F0, 2513, 1},
    {0xF9F1, 2514, 1}, {0xF9F2, 2515, 1}, {0xF9F3, 2516, 1}, {0xF9F4, 2517, 1}, {0xF9F5, 2518, 1},
    {0xF9F6, 2519, 1}, {0xF9F7, 2520, 1}, {0xF9F8, 2521, 1}, {0xF9F9, 2522, 1}, {0xF9FA, 2523, 1},
    {0xF9FB, 2524, 1}, {0xF9FC, 2525, 1}, {0xF9FD, 2526, 1}, {0xF9FE, 2527, 1}, {0xF9FF, 2528, 1},
    {0xFA00, 2529, 1}, {0xFA01, 2530, 1}, {0xFA02, 2531, 1}, {0xFA03, 2532, 1}, {0xFA04, 2533, 1},
    {0xFA05, 2534, 1}, {0xFA06, 2535, 1}, {0xFA07, 2536, 1}, {0xFA08, 2537, 1}, {0xFA09, 2538, 1},
    {0xFA0A, 2539, 1}, {0xFA0B, 2540, 1}, {0xFA0C, 2541, 1}, {0xFA0D, 2542, 1}, {0xFA10, 2543, 1},
    {0xFA12, 2544, 1}, {0xFA15, 2545, 1}, {0xFA16, 2546, 1}, {0xFA17, 2547, 1}, {0xFA18, 2548, 1},
    {0xFA19, 2549, 1}, {0xFA1A, 2550, 1}, {0xFA1B, 2551, 1}, {0xFA1C, 2552, 1}, {0xFA1D, 2553, 1},
    {0xFA1E, 2554, 1}, {0xFA20, 2555, 1}, {0xFA22, 2556, 1}, {0xFA25, 2557, 1}, {0xFA26, 2558, 1},
    {0xFA2A, 2559, 1}, {0xFA2B, 2560, 1}, {0xFA2C, 2561, 1}, {0xFA2D, 2562, 1}, {0xFA2E, 2563, 1},
    {0xFA2F, 2564, 1}, {0xFA30, 2565, 1}, {0xFA31, 2566, 1}, {0xFA32, 2567, 1}, {0xFA33, 2568, 1},
    {0xFA34, 2569, 1}, {0xFA35, 2570, 1}, {0xFA36, 2571, 1}, {0xFA37, 2572, 1}, {0xFA38, 2573, 1},
    {0xFA39, 2574, 1}, {0xFA3A, 2575, 1}, {0xFA3B, 2576, 1}, {0xFA3C, 2577, 1}, {0xFA3D, 2578, 1},
    {0xFA3E, 2579, 1}, {0xFA3F, 2580, 1}, {0xFA40, 2581, 1}, {0xFA41, 2582, 1}, {0xFA42, 2583, 1},
    {0xFA43, 2584, 1}, {0xFA44, 2585, 1}, {0xFA45, 2586, 1}, {0xFA46, 2587, 1}, {0xFA47, 2588, 1},
    {0xFA48, 2589, 1}, {0xFA49, 2590, 1}, {0xFA4A, 2591, 1}, {0xFA4B, 2592, 1}, {0xFA4C, 2593, 1},
    {0xFA4D, 2594, 1}, {0xFA4E, 2595, 1}, {0xFA4F, 2596, 1}, {0xFA50, 2597, 1}, {0xFA51, 2598, 1},
    {0xFA52, 2599, 1}, {0xFA53, 2600, 1}, {0xFA54, 2601, 1}, {0xFA55, 2602, 1}, {0xFA56, 2603, 1},
    {0xFA57, 2604, 1}, {0xFA58, 2605, 1}, {0xFA59, 2606, 1}, {0xFA5A, 2607, 1}, {0xFA5B, 2608, 1},
    {0xFA5C, 2609, 1}, {0xFA5D, 2610, 1}, {0xFA5E, 2611, 1}, {0xFA5F, 2612, 1}, {0xFA60, 2613, 1},
    {0xFA61, 2614, 1}, {0xFA62, 2615, 1}, {0xFA63, 2616, 1}, {0xFA64, 2617, 1}, {0xFA65, 2618, 1},
    {0xFA66, 2619, 1}, {0xFA67, 2620, 1}, {0xFA68, 2621, 1}, {0xFA69, 2622, 1}, {0xFA6A, 2623, 1},
    {0xFA6B, 2624, 1}, {0xFA6C, 2625, 1}, {0xFA6D, 2626, 1}, {0xFA70, 2627, 1}, {0xFA71, 2628, 1},
    {0xFA72, 2629, 1}, {0xFA73, 2630, 1}, {0xFA74, 2631, 1}, {0xFA75, 2632, 1}, {0xFA76, 2633, 1},
    {0xFA77, 2634, 1}, {0xFA78, 2635, 1}, {0xFA79, 2636, 1}, {0xFA7A, 2637, 1}, {0xFA7B, 2638, 1},
    {0xFA7C, 2639, 1}, {0xFA7D, 2640, 1}, {0xFA7E, 2641, 1}, {0xFA7F, 2642, 1}, {0xFA80, 2643, 1},
    {0xFA81, 2644, 1}, {0xFA82, 2645, 1}, {0xFA83, 2646, 1}, {0xFA84, 2647, 1}, {0xFA85, 2648, 1},
    {0xFA86, 2649, 1}, {0xFA87, 2650, 1}, {0xFA88, 2651, 1}, {0xFA89, 2652, 1}, {0xFA8A, 2653, 1},
    {0xFA8B, 2654, 1}, {0xFA8C, 2655, 1}, {0xFA8D, 2656, 1}, {0xFA8E, 2657, 1}, {0xFA8F, 2658, 1},
    {0xFA90, 2659, 1}, {0xFA91, 2660, 1}, {0xFA92, 2661, 1}, {0xFA93, 2662, 1}, {0xFA94, 2663, 1},
    {0xFA95, 2664, 1}, {0xFA96, 2665, 1}, {0xFA97, 2666, 1}, {0xFA98, 2667, 1}, {0xFA99, 2668, 1},
    {0xFA9A, 2669, 1}, {0xFA9B, 2670, 1}, {0xFA9C, 2671, 1}, {0xFA9D, 2672, 1}, {0xFA9E, 2673, 1},
    {0xFA9F, 2674, 1}, {0xFAA0, 2675, 1}, {0xFAA1, 2676, 1}, {0xFAA2, 2677, 1}, {0xFAA3, 2678, 1},
    {0xFAA4, 2679, 1}, {0xFAA5, 2680, 1}, {0xFAA6, 2681, 1}, {0xFAA7, 2682, 1}, {0xFAA8, 2683, 1},
    {0xFAA9, 2684, 1}, {0xFAAA, 2685, 1}, {0xFAAB, 2686, 1}, {0xFAAC, 2687, 1}, {0xFAAD, 2688, 1},
    {0xFAAE, 2689, 1}, {0xFAAF, 2690, 1}, {0xFAB0, 2691, 1}, {0xFAB1, 2692, 1}, {0xFAB2, 2693, 1},
    {0xFAB3, 2694, 1}, {0xFAB4, 2695, 1}, {0xFAB5, 2696, 1}, {0xFAB6, 2697, 1}, {0xFAB7, 2698, 1},
    {0xFAB8, 2699, 1}, {0xFAB9, 2700, 1}, {0xFABA, 2701, 1}, {0xFABB, 2702, 1}, {0xFABC, 2703, 1},
    {0xFABD, 2704, 1}, {0xFABE, 2705, 1}, {0xFABF, 2706, 1}, {0xFAC0, 2707, 1}, {0xFAC1, 2708, 1},
    {0xFAC2, 2709, 1}, {0xFAC3, 2710, 1}, {0xFAC4, 2711, 1}, {0xFAC5, 2712, 1}, {0xFAC6, 2713, 1},
    {0xFAC7, 2714, 1}, {0xFAC8, 2715, 1}, {0xFAC9, 2716, 1}, {0xFACA, 2717, 1}, {0xFACB, 2718, 1},
    {0xFACC, 2719, 1}, {0xFACD, 2720, 1}, {0xFACE, 2721, 1}, {0xFACF, 2722, 1}, {0xFAD0, 2723, 1},
    {0xFAD1, 2724, 1}, {0xFAD2, 2725, 1}, {0xFAD3, 2726, 1}, {0xFAD4, 2727, 1}, {0xFAD5, 2728, 1},
    {0xFAD6, 2729, 1}, {0xFAD7, 2730, 1}, {0xFAD8, 2731, 1}, {0xFAD9, 2732, 1}, {0xFB1D, 2733, 2},
    {0xFB1F, 2735, 2}, {0xFB2A, 2737, 2}, {0xFB2B, 2739, 2}, {0xFB2C, 2741, 3}, {0xFB2D, 2744, 3},
    {0xFB2E, 2747, 2}, {0xFB2F, 2749, 2}, {0xFB30, 2751, 2}, {0xFB31, 2753, 2}, {0xFB32, 2755, 2},
    {0xFB33, 2757, 2}, {0xFB34, 2759, 2}, {0xFB35, 2761, 2}, {0xFB36, 2763, 2}, {0xFB38, 2765, 2},
    {0xFB39, 2767, 2}, {0xFB3A, 2769, 2}, {0xFB3B, 2771, 2}, {0xFB3C, 2773, 2}, {0xFB3E, 2775, 2},
    {0xFB40, 2777, 2}, {0xFB41, 2779, 2}, {0xFB43, 2781, 2}, {0xFB44, 2783, 2}, {0xFB46, 2785, 2},
    {0xFB47, 2787, 2}, {0xFB48, 2789, 2}, {0xFB49, 2791, 2}, {0xFB4A, 2793, 2}, {0xFB4B, 2795, 2},
    {0xFB4C, 2797, 2}, {0xFB4D, 2799, 2}, {0xFB4E, 2801, 2}, {0x1109A, 2803, 2}, {0x1109C, 2805, 2},
    {0x110AB, 2807, 2}, {0x1112E, 2809, 2}, {0x1112F, 2811, 2}, {0x1134B, 2813, 2}, {0x1134C, 2815, 2},
    {0x114BB, 2817, 2}, {0x114BC, 2819, 2}, {0x114BE, 2821, 2}, {0x115BA, 2823, 2}, {0x115BB, 2825, 2},
    {0x1D15E, 2827, 2}, {0x1D15F, 2829, 2}, {0x1D160, 2831, 3}, {0x1D161, 2834, 3}, {0x1D162, 2837, 3},
    {0x1D163, 2840, 3}, {0x1D164, 2843, 3}, {0x1D1BB, 2846, 2}, {0x1D1BC, 2848, 2}, {0x1D1BD, 2850, 3},
    {0x1D1BE, 2853, 3}, {0x1D1BF, 2856, 3}, {0x1D1C0, 2859, 3}, {0x2F800, 2862, 1}, {0x2F801, 2863, 1},
    {0x2F802, 2864, 1}, {0x2F803, 2865, 1}, {0x2F804, 2866, 1}, {0x2F805, 2867, 1}, {0x2F806, 2868, 1},
    {0x2F807, 2869, 1}, {0x2F808, 2870, 1}, {0x2F809, 2871, 1}, {0x2F80A, 2872, 1}, {0x2F80B, 2873, 1},
    {0x2F80C, 2874, 1}, {0x2F80D, 2875, 1}, {0x2F80E, 2876, 1}, {0x2F80F, 2877, 1}, {0x2F810, 2878, 1},
    {0x2F811, 2879, 1}, {0x2F812, 2880, 1}, {0x2F813, 2881, 1}, {0x2F814, 2882, 1}, {0x2F815, 2883, 1},
    {0x2F816, 2884, 1}, {0x2F817, 2885, 1}, {0x2F818, 2886, 1}, {0x2F819, 2887, 1}, {0x2F81A, 2888, 1},
    {0x2F81B, 2889, 1}, {0x2F81C, 2890, 1}, {0x2F81D, 2891, 1}, {0x2F81E, 2892, 1}, {0x2F81F, 2893, 1},
    {0x2F820, 2894, 1}, {0x2F821, 2895, 1}, {0x2F822, 2896, 1}, {0x2F823, 2897, 1}, {0x2F824, 2898, 1},
    {0x2F825, 2899, 1}, {0x2F826, 2900, 1}, {0x2F827, 2901, 1}, {0x2F828, 2902, 1}, {0x2F829, 2903, 1},
    {0x2F82A, 2904, 1}, {0x2F82B, 2905, 1}, {0x2F82C, 2906, 1}, {0x2F82D, 2907, 1}, {0x2F82E, 2908, 1},
    {0x2F82F, 2909, 1}, {0x2F830, 2910, 1}, {0x2F831, 2911, 1}, {0x2F832, 2912, 1}, {0x2F833, 2913, 1},
    {0x2F834, 2914, 1}, {0x2F835, 2915, 1}, {0x2F836, 2916, 1}, {0x2F837, 2917, 1}, {0x2F838, 2918, 1},
    {0x2F839, 2919, 1}, {0x2F83A, 2920, 1}, {0x2F83B, 2921, 1}, {0x2F83C, 2922, 1}, {0x2F83D, 2923, 1},
    {0x2F83E, 2924, 1}, {0x2F83F, 2925, 1}, {0x2F840, 2926, 1}, {0x2F841, 2927, 1}, {0x2F842, 2928, 1},
    {0x2F843, 2929, 1}, {0x2F844, 2930, 1}, {0x2F845, 2931, 1}, {0x2F846, 2932, 1}, {0x2F847, 2933, 1},
    {0x2F848, 2934, 1}, {0x2F849, 2935, 1}, {0x2F84A, 2936, 1}, {0x2F84B, 2937, 1}, {0x2F84C, 2938, 1},
    {0x2F84D, 2939, 1}, {0x2F84E, 2940, 1}, {0x2F84F, 2941, 1}, {0x2F850, 2942, 1}, {0x2F851, 2943, 1},
    {0x2F852, 2944, 1}, {0x2F853, 2945, 1}, {0x2F854, 2946, 1}, {0x2F855, 2947, 1}, {0x2F856, 2948, 1},
    {0x2F857, 2949, 1}, {0x2F858, 2950, 1}, {0x2F859, 2951, 1}, {0x2F85A, 2952, 1}, {0x2F85B, 2953, 1},
    {0x2F85C, 2954, 1}, {0x2F85D, 2955, 1}, {0x2F85E, 2956, 1}, {0x2F85F, 2957, 1}, {0x2F860, 2958, 1},
    {0x2F861, 2959, 1}, {0x2F862, 2960, 1}, {0x2F863, 2961, 1}, {0x2F864, 2962, 1}, {0x2F865, 2963, 1},
    {0x2F866, 2964, 1}, {0x2F867, 2965, 1}, {0x2F868, 2966, 1}, {0x2F869, 2967, 1}, {0x2F86A, 2968, 1},
    {0x2F86B, 2969, 1}, {0x2F86C, 2970, 1}, {0x2F86D, 2971, 1}, {0x2F86E, 2972, 1}, {0x2F86F, 2973, 1},
    {0x2F870, 2974, 1}, {0x2F871, 2975, 1}, {0x2F872, 2976, 1}, {0x2F873, 2977, 1}, {0x2F874, 2978, 1},
    {0x2F875, 2979, 1}, {0x2F876, 2980, 1}, {0x2F877, 2981, 1}, {0x2F878, 2982, 1}, {0x2F879, 2983, 1},
    {0x2F87A, 2984, 1}, {0x2F87B, 2985, 1}, {0x2F87C, 2986, 1}, {0x2F87D, 2987, 1}, {0x2F87E, 2988, 1},
    {0x2F87F, 2989, 1}, {0x2F880, 2990, 1}, {0x2F881, 2991, 1}, {0x2F882, 2992, 1}, {0x2F883, 2993, 1},
    {0x2F884, 2994, 1}, {0x2F885, 2995, 1}, {0x2F886, 2996, 1}, {0x2F887, 2997, 1}, {0x2F888, 2998, 1},
    {0x2F889, 2999, 1}, {0x2F88A, 3000, 1}, {0x2F88B, 3001, 1}, {0x2F88C, 3002, 1}, {0x2F88D, 3003, 1},
    {0x2F88E, 3004, 1}, {0x2F88F, 3005, 1}, {0x2F890, 3006, 1}, {0x2F891, 3007, 1}, {0x2F892, 3008, 1},
    {0x2F893, 3009, 1}, {0x2F894, 3010, 1}, {0x2F895, 3011, 1}, {0x2F896, 3012, 1}, {0x2F897, 3013, 1},
    {0x2F898, 3014, 1}, {0x2F899, 3015, 1}, {0x2F89A, 3016, 1}, {0x2F89B, 3017, 1}, {0x2F89C, 3018, 1},
    {0x2F89D, 3019, 1}, {0x2F89E, 3020, 1}, {0x2F89F, 3021, 1}, {0x2F8A0, 3022, 1}, {0x2F8A1, 3023, 1},
    {0x2F8A2, 3024, 1}, {0x2F8A3, 3025, 1}, {0x2F8A4, 3026, 1}, {0x2F8A5, 3027, 1}, {0x2F8A6, 3028, 1},
    {0x2F8A7, 3029, 1}, {0x2F8A8, 3030, 1}, {0x2F8A9, 3031, 1}, {0x2F8AA, 3032, 1}, {0x2F8AB, 3033, 1},
    {0x2F8AC, 3034, 1}, {0x2F8AD, 3035, 1}, {0x2F8AE, 3036, 1}, {0x2F8AF, 3037, 1}, {0x2F8B0, 3038, 1},
    {0x2F8B1, 3039, 1}, {0x2F8B2, 3040, 1}, {0x2F8B3, 3041, 1}, {0x2F8B4, 3042, 1}, {0x2F8B5, 3043, 1},
    {0x2F8B6, 3044, 1}, {0x2F8B7, 3045, 1}, {0x2F8B8, 3046, 1}, {0x2F8B9, 3047, 1}, {0x2F8BA, 3048, 1},
    {0x2F8BB, 3049, 1}, {0x2F8BC, 3050, 1}, {0x2F8BD, 3051, 1}, {0x2F8BE, 3052, 1}, {0x2F8BF, 3053, 1},
    {0x2F8C0, 3054, 1}, {0x2F8C1, 3055, 1}, {0x2F8C2, 3056, 1}, {0x2F8C3, 3057, 1}, {0x2F8C4, 3058, 1},
    {0x2F8C5, 3059, 1}, {0x2F8C6, 3060, 1}, {0x2F8C7, 3061, 1}, {0x2F8C8, 3062, 1}, {0x2F8C9, 3063, 1},
    {0x2F8CA, 3064, 1}, {0x2F8CB, 3065, 1}, {0x2F8CC, 3066, 1}, {0x2F8CD, 3067, 1}, {0x2F8CE, 3068, 1},
    {0x2F8CF, 3069, 1}, {0x2F8D0, 3070, 1}, {0x2F8D1, 3071, 1}, {0x2F8D2, 3072, 1}, {0x2F8D3, 3073, 1},
    {0x2F8D4, 3074, 1}, {0x2F8D5, 3075, 1}, {0x2F8D6, 3076, 1}, {0x2F8D7, 3077, 1}, {0x2F8D8, 3078, 1},
    {0x2F8D9, 3079, 1}, {0x2F8DA, 3080, 1}, {0x2F8DB, 3081, 1}, {0x2F8DC, 3082, 1}, {0x2F8DD, 3083, 1},
    {0x2F8DE, 3084, 1}, {0x2F8DF, 3085, 1}, {0x2F8E0, 3086, 1}, {0x2F8E1, 3087, 1}, {0x2F8E2, 3088, 1},
    {0x2F8E3, 3089, 1}, {0x2F8E4, 3090, 1}, {0x2F8E5, 3091, 1}, {0x2F8E6, 3092, 1}, {0x2F8E7, 3093, 1},
    {0x2F8E8, 3094, 1}, {0x2F8E9, 3095, 1}, {0x2F8EA, 3096, 1}, {0x2F8EB, 3097, 1}, {0x2F8EC, 3098, 1},
    {0x2F8ED, 3099, 1}, {0x2F8EE, 3100, 1}, {0x2F8EF, 3101, 1}, {0x2F8F0, 3102, 1}, {0x2F8F1, 3103, 1},
    {0x2F8F2, 3104, 1}, {0x2F8F3, 3105, 1}, {0x2F8F4, 3106, 1}, {0x2F8F5, 3107, 1}, {0x2F8F6, 3108, 1},
    {0x2F8F7, 3109, 1}, {0x2F8F8, 3110, 1}, {0x2F8F9, 3111, 1}, {0x2F8FA, 3112, 1}, {0x2F8FB, 3113, 1},
    {0x2F8FC, 3114, 1}, {0x2F8FD, 3115, 1}, {0x2F8FE, 3116, 1}, {0x2F8FF, 3117, 1}, {0x2F900, 3118, 1},
    {0x2F901, 3119, 1}, {0x2F902, 3120, 1}, {0x2F903, 3121, 1}, {0x2F904, 3122, 1}, {0x2F905, 3123, 1},
    {0x2F906, 3124, 1}, {0x2F907, 3125, 1}, {0x2F908, 3126, 1}, {0x2F909, 3127, 1}, {0x2F90A, 3128, 1},
    {0x2F90B, 3129, 1}, {0x2F90C, 3130, 1}, {0x2F90D, 3131, 1}, {0x2F90E, 3132, 1}, {0x2F90F, 3133, 1},
    {0x2F910, 3134, 1}, {0x2F911, 3135, 1}, {0x2F912, 3136, 1}, {0x2F913, 3137, 1}, {0x2F914, 3138, 1},
    {0x2F915, 3139, 1}, {0x2F916, 3140, 1}, {0x2F917, 3141, 1}, {0x2F918, 3142, 1}, {0x2F919, 3143, 1},
    {0x2F91A, 3144, 1}, {0x2F91B, 3145, 1}, {0x2F91C, 3146, 1}, {0x2F91D, 3147, 1}, {0x2F91E, 3148, 1},
    {0x2F91F, 3149, 1}, {0x2F920, 3150, 1}, {0x2F921, 3151, 1}, {0x2F922, 3152, 1}, {0x2F923, 3153, 1},
    {0x2F924, 3154, 1}, {0x2F925, 3155, 1}, {0x2F926, 3156, 1}, {0x2F927, 3157, 1}, {0x2F928, 3158, 1},
    {0x2F929, 3159, 1}, {0x2F92A, 3160, 1}, {0x2F92B, 3161, 1}, {0x2F92C, 3162, 1}, {0x2F92D, 3163, 1},
    {0x2F92E, 3164, 1}, {0x2F92F, 3165, 1}, {0x2F930, 3166, 1}, {0x2F931, 3167, 1}, {0x2F932, 3168, 1},
    {0x2F933, 3169, 1}, {0x2F934, 3170, 1}, {0x2F935, 3171, 1}, {0x2F936, 3172, 1}, {0x2F937, 3173, 1},
    {0x2F938, 3174, 1}, {0x2F939, 3175, 1}, {0x2F93A, 3176, 1}, {0x2F93B, 3177, 1}, {0x2F93C, 3178, 1},
    {0x2F93D, 3179, 1}, {0x2F93E, 3180, 1}, {0x2F93F, 3181, 1}, {0x2F940, 3182, 1}, {0x2F941, 3183, 1},
    {0x2F942, 3184, 1}, {0x2F943, 3185, 1}, {0x2F944, 3186, 1}, {0x2F945, 3187, 1}, {0x2F946, 3188, 1},
    {0x2F947, 3189, 1}, {0x2F948, 3190, 1}, {0x2F949, 3191, 1}, {0x2F94A, 3192, 1}, {0x2F94B, 3193, 1},
    {0x2F94C, 3194, 1}, {0x2F94D, 3195, 1}, {0x2F94E, 3196, 1}, {0x2F94F, 3197, 1}, {0x2F950, 3198, 1},
    {0x2F951, 3199, 1}, {0x2F952, 3200, 1}, {0x2F953, 3201, 1}, {0x2F954, 3202, 1}, {0x2F955, 3203, 1},
    {0x2F956, 3204, 1}, {0x2F957, 3205, 1}, {0x2F958, 3206, 1}, {0x2F959, 3207, 1}, {0x2F95A, 3208, 1},
    {0x2F95B, 3209, 1}, {0x2F95C, 3210, 1}, {0x2F95D, 3211, 1}, {0x2F95E, 3212, 1}, {0x2F95F, 3213, 1},
    {0x2F960, 3214, 1}, {0x2F961, 3215, 1}, {0x2F962, 3216, 1}, {0x2F963, 3217, 1}, {0x2F964, 3218, 1},
    {0x2F965, 3219, 1}, {0x2F966, 3220, 1}, {0x2F967, 3221, 1}, {0x2F968, 3222, 1}, {0x2F969, 3223, 1},
    {0x2F96A, 3224, 1}, {0x2F96B, 3225, 1}, {0x2F96C, 3226, 1}, {0x2F96D, 3227, 1}, {0x2F96E, 3228, 1},
    {0x2F96F, 3229, 1}, {0x2F970, 3230, 1}, {0x2F971, 3231, 1}, {0x2F972, 3232, 1}, {0x2F973, 3233, 1},
    {0x2F974, 3234, 1}, {0x2F975, 3235, 1}, {0x2F976, 3236, 1}, {0x2F977, 3237, 1}, {0x2F978, 3238, 1},
    {0x2F979, 3239, 1}, {0x2F97A, 3240, 1}, {0x2F97B, 3241, 1}, {0x2F97C, 3242, 1}, {0x2F97D, 3243, 1},
    {0x2F97E, 3244, 1}, {0x2F97F, 3245, 1}, {0x2F980, 3246, 1}, {0x2F981, 3247, 1}, {0x2F982, 3248, 1},
    {0x2F983, 3249, 1}, {0x2F984, 3250, 1}, {0x2F985, 3251, 1}, {0x2F986, 3252, 1}, {0x2F987, 3253, 1},
    {0x2F988, 3254, 1}, {0x2F989, 3255, 1}, {0x2F98A, 3256, 1}, {0x2F98B, 3257, 1}, {0x2F98C, 3258, 1},
    {0x2F98D, 3259, 1}, {0x2F98E, 3260, 1}, {0x2F98F, 3261, 1}, {0x2F990, 3262, 1}, {0x2F991, 3263, 1},
    {0x2F992, 3264, 1}, {0x2F993, 3265, 1}, {0x2F994, 3266, 1}, {0x2F995, 3267, 1}, {0x2F996, 3268, 1},
    {0x2F997, 3269, 1}, {0x2F998, 3270, 1}, {0x2F999, 3271, 1}, {0x2F99A, 3272, 1}, {0x2F99B, 3273, 1},
    {0x2F99C, 3274, 1}, {0x2F99D, 3275, 1}, {0x2F99E, 3276, 1}, {0x2F99F, 3277, 1}, {0x2F9A0, 3278, 1},
    {0x2F9A1, 3279, 1}, {0x2F9A2, 3280, 1}, {0x2F9A3, 3281, 1}, {0x2F9A4, 3282, 1}, {0x2F9A5, 3283, 1},
    {0x2F9A6, 3284, 1}, {0x2F9A7, 3285, 1}, {0x2F9A8, 3286, 1}, {0x2F9A9, 3287, 1}, {0x2F9AA, 3288, 1},
    {0x2F9AB, 3289, 1}, {0x2F9AC, 3290, 1}, {0x2F9AD, 3291, 1}, {0x2F9AE, 3292, 1}, {0x2F9AF, 3293, 1},
    {0x2F9B0, 3294, 1}, {0x2F9B1, 3295, 1}, {0x2F9B2, 3296, 1}, {0x2F9B3, 3297, 1}, {0x2F9B4, 3298, 1},
    {0x2F9B5, 3299, 1}, {0x2F9B6, 3300, 1}, {0x2F9B7, 3301, 1}, {0x2F9B8, 3302, 1}, {0x2F9B9, 3303, 1},
    {0x2F9BA, 3304, 1}, {0x2F9BB, 3305, 1}, {0x2F9BC, 3306, 1}, {0x2F9BD, 3307, 1}, {0x2F9BE, 3308, 1},
    {0x2F9BF, 3309, 1}, {0x2F9C0, 3310, 1}, {0x2F9C1, 3311, 1}, {0x2F9C2, 3312, 1}, {0x2F9C3, 3313, 1},
    {0x2F9C4, 3314, 1}, {0x2F9C5, 3315, 1}, {0x2F9C6, 3316, 1}, {0x2F9C7, 3317, 1}, {0x2F9C8, 3318, 1},
    {0x2F9C9, 3319, 1}, {0x2F9CA, 3320, 1}, {0x2F9CB, 3321, 1}, {0x2F9CC, 3322, 1}, {0x2F9CD, 3323, 1},
    {0x2F9CE, 3324, 1}, {0x2F9CF, 3325, 1}, {0x2F9D0, 3326, 1}, {0x2F9D1, 3327, 1}, {0x2F9D2, 3328, 1},
    {0x2F9D3, 3329, 1}, {0x2F9D4, 3330, 1}, {0x2F9D5, 3331, 1}, {0x2F9D6, 3332, 1}, {0x2F9D7, 3333, 1},
    {0x2F9D8, 3334, 1}, {0x2F9D9, 3335, 1}, {0x2F9DA, 3336, 1}, {0x2F9DB, 3337, 1}, {0x2F9DC, 3338, 1},
    {0x2F9DD, 3339, 1}, {0x2F9DE, 3340, 1}, {0x2F9DF, 3341, 1}, {0x2F9E0, 3342, 1}, {0x2F9E1, 3343, 1},
    {0x2F9E2, 3344, 1}, {0x2F9E3, 3345, 1}, {0x2F9E4, 3346, 1}, {0x2F9E5, 3347, 1}, {0x2F9E6, 3348, 1},
    {0x2F9E7, 3349, 1}, {0x2F9E8, 3350, 1}, {0x2F9E9, 3351, 1}, {0x2F9EA, 3352, 1}, {0x2F9EB, 3353, 1},
    {0x2F9EC, 3354, 1}, {0x2F9ED, 3355, 1}, {0x2F9EE, 3356, 1}, {0x2F9EF, 3357, 1}, {0x2F9F0, 3358, 1},
    {0x2F9F1, 3359, 1}, {0x2F9F2, 3360, 1}, {0x2F9F3, 3361, 1}, {0x2F9F4, 3362, 1}, {0x2F9F5, 3363, 1},
    {0x2F9F6, 3364, 1}, {0x2F9F7, 3365, 1}, {0x2F9F8, 3366, 1}, {0x2F9F9, 3367, 1}, {0x2F9FA, 3368, 1},
    {0x2F9FB, 3369, 1}, {0x2F9FC, 3370, 1}, {0x2F9FD, 3371, 1}, {0x2F9FE, 3372, 1}, {0x2F9FF, 3373, 1},
    {0x2FA00, 3374, 1}, {0x2FA01, 3375, 1}, {0x2FA02, 3376, 1}, {0x2FA03, 3377, 1}, {0x2FA04, 3378, 1},
    {0x2FA05, 3379, 1}, {0x2FA06, 3380, 1}, {0x2FA07, 3381, 1}, {0x2FA08, 3382, 1}, {0x2FA09, 3383, 1},
    {0x2FA0A, 3384, 1}, {0x2FA0B, 3385, 1}, {0x2FA0C, 3386, 1}, {0x2FA0D, 3387, 1}, {0x2FA0E, 3388, 1},
    {0x2FA0F, 3389, 1}, {0x2FA10, 3390, 1}, {0x2FA11, 3391, 1}, {0x2FA12, 3392, 1}, {0x2FA13, 3393, 1},
    {0x2FA14, 3394, 1}, {0x2FA15, 3395, 1}, {0x2FA16, 3396, 1}, {0x2FA17, 3397, 1}, {0x2FA18, 3398, 1},
    {0x2FA19, 3399, 1}, {0x2FA1A, 3400, 1}, {0x2FA1B, 3401, 1}, {0x2FA1C, 3402, 1}, {0x2FA1D, 3403, 1},
};

inline constexpr uint32_t kDecompositionData[] = {
    0x41, 0x300, 0x41, 0x301, 0x41, 0x302, 0x41, 0x303, 0x41, 0x308,
    0x41, 0x30A, 0x43, 0x327, 0x45, 0x300, 0x45, 0x301, 0x45, 0x302,
    0x45, 0x308, 0x49, 0x300, 0x49, 0x301, 0x49, 0x302, 0x49, 0x308,
    0x4E, 0x303, 0x4F, 0x300, 0x4F, 0x301, 0x4F, 0x302, 0x4F, 0x303,
    0x4F, 0x308, 0x55, 0x300, 0x55, 0x301, 0x55, 0x302, 0x55, 0x308,
    0x59, 0x301, 0x61, 0x300, 0x61, 0x301, 0x61, 0x302, 0x61, 0x303,
    0x61, 0x308, 0x61, 0x30A, 0x63, 0x327, 0x65, 0x300, 0x65, 0x301,
    0x65, 0x302, 0x65, 0x308, 0x69, 0x300, 0x69, 0x301, 0x69, 0x302,
    0x69, 0x308, 0x6E, 0x303, 0x6F, 0x300, 0x6F, 0x301, 0x6F, 0x302,
    0x6F, 0x303, 0x6F, 0x308, 0x75, 0x300, 0x75, 0x301, 0x75, 0x302,
    0x75, 0x308, 0x79, 0x301, 0x79, 0x308, 0x41, 0x304, 0x61, 0x304,
    0x41, 0x306, 0x61, 0x306, 0x41, 0x328, 0x61, 0x328, 0x43, 0x301,
    0x63, 0x301, 0x43, 0x302, 0x63, 0x302, 0x43, 0x307, 0x63, 0x307,
    0x43, 0x30C, 0x63, 0x30C, 0x44, 0x30C, 0x64, 0x30C, 0x45, 0x304,
    0x65, 0x304, 0x45, 0x306, 0x65, 0x306, 0x45, 0x307, 0x65, 0x307,
    0x45, 0x328, 0x65, 0x328, 0x45, 0x30C, 0x65, 0x30C, 0x47, 0x302,
    0x67, 0x302, 0x47, 0x306, 0x67, 0x306, 0x47, 0x307, 0x67, 0x307,
    0x47, 0x327, 0x67, 0x327, 0x48, 0x302, 0x68, 0x302, 0x49, 0x303,
    0x69, 0x303, 0x49, 0x304, 0x69, 0x304, 0x49, 0x306, 0x69, 0x306,
    0x49, 0x328, 0x69, 0x328, 0x49, 0x307, 0x4A, 0x302, 0x6A, 0x302,
    0x4B, 0x327, 0x6B, 0x327, 0x4C, 0x301, 0x6C, 0x301, 0x4C, 0x327,
    0x6C, 0x327, 0x4C, 0x30C, 0x6C, 0x30C, 0x4E, 0x301, 0x6E, 0x301,
    0x4E, 0x327, 0x6E, 0x327, 0x4E, 0x30C, 0x6E, 0x30C, 0x4F, 0x304,
    0x6F, 0x304, 0x4F, 0x306, 0x6F, 0x306, 0x4F, 0x30B, 0x6F, 0x30B,
    0x52, 0x301, 0x72, 0x301, 0x52, 0x327, 0x72, 0x327, 0x52, 0x30C,
    0x72, 0x30C, 0x53, 0x301, 0x73, 0x301, 0x53, 0x302, 0x73, 0x302,
    0x53, 0x327, 0x73, 0x327, 0x53, 0x30C, 0x73, 0x30C, 0x54, 0x327,
    0x74, 0x327, 0x54, 0x30C, 0x74, 0x30C, 0x55, 0x303, 0x75, 0x303,
    0x55, 0x304, 0x75, 0x304, 0x55, 0x306, 0x75, 0x306, 0x55, 0x30A,
    0x75, 0x30A, 0x55, 0x30B, 0x75, 0x30B, 0x55, 0x328, 0x75, 0x328,
    0x57, 0x302, 0x77, 0x302, 0x59, 0x302, 0x79, 0x302, 0x59, 0x308,
    0x5A, 0x301, 0x7A, 0x301, 0x5A, 0x307, 0x7A, 0x307, 0x5A, 0x30C,
    0x7A, 0x30C, 0x4F, 0x31B, 0x6F, 0x31B, 0x55, 0x31B, 0x75, 0x31B,
    0x41, 0x30C, 0x61, 0x30C, 0x49, 0x30C, 0x69, 0x30C, 0x4F, 0x30C,
    0x6F, 0x30C, 0x55, 0x30C, 0x75, 0x30C, 0x55, 0x308, 0x304, 0x75,
    0x308, 0x304, 0x55, 0x308, 0x301, 0x75, 0x308, 0x301, 0x55, 0x308,
    0x30C, 0x75, 0x308, 0x30C, 0x55, 0x308, 0x300, 0x75, 0x308, 0x300,
    0x41, 0x308, 0x304, 0x61, 0x308, 0x304, 0x41, 0x307, 0x304, 0x61,
    0x307, 0x304, 0xC6, 0x304, 0xE6, 0x304, 0x47, 0x30C, 0x67, 0x30C,
    0x4B, 0x30C, 0x6B, 0x30C, 0x4F, 0x328, 0x6F, 0x328, 0x4F, 0x328,
    0x304, 0x6F, 0x328, 0x304, 0x1B7, 0x30C, 0x292, 0x30C, 0x6A, 0x30C,
    0x47, 0x301, 0x67, 0x301, 0x4E, 0x300, 0x6E, 0x300, 0x41, 0x30A,
    0x301, 0x61, 0x30A, 0x301, 0xC6, 0x301, 0xE6, 0x301, 0xD8, 0x301,
    0xF8, 0x301, 0x41, 0x30F, 0x61, 0x30F, 0x41, 0x311, 0x61, 0x311,
    0x45, 0x30F, 0x65, 0x30F, 0x45, 0x311, 0x65, 0x311, 0x49, 0x30F,
    0x69, 0x30F, 0x49, 0x311, 0x69, 0x311, 0x4F, 0x30F, 0x6F, 0x30F,
    0x4F, 0x311, 0x6F, 0x311, 0x52, 0x30F, 0x72, 0x30F, 0x52, 0x311,
    0x72, 0x311, 0x55, 0x30F, 0x75, 0x30F, 0x55, 0x311, 0x75, 0x311,
    0x53, 0x326, 0x73, 0x326, 0x54, 0x326, 0x74, 0x326, 0x48, 0x30C,
    0x68, 0x30C, 0x41, 0x307, 0x61, 0x307, 0x45, 0x327, 0x65, 0x327,
    0x4F, 0x308, 0x304, 0x6F, 0x308, 0x304, 0x4F, 0x303, 0x304, 0x6F,
    0x303, 0x304, 0x4F, 0x307, 0x6F, 0x307, 0x4F, 0x307, 0x304, 0x6F,
    0x307, 0x304, 0x59, 0x304, 0x79, 0x304, 0x300, 0x301, 0x313, 0x308,
    0x301, 0x2B9, 0x3B, 0xA8, 0x301, 0x391, 0x301, 0xB7, 0x395, 0x301,
    0x397, 0x301, 0x399, 0x301, 0x39F, 0x301, 0x3A5, 0x301, 0x3A9, 0x301,
    0x3B9, 0x308, 0x301, 0x399, 0x308, 0x3A5, 0x308, 0x3B1, 0x301, 0x3B5,
    0x301, 0x3B7, 0x301, 0x3B9, 0x301, 0x3C5, 0x308, 0x301, 0x3B9, 0x308,
    0x3C5, 0x308, 0x3BF, 0x301, 0x3C5, 0x301, 0x3C9, 0x301, 0x3D2, 0x301,
    0x3D2, 0x308, 0x415, 0x300, 0x415, 0x308, 0x413, 0x301, 0x406, 0x308,
    0x41A, 0x301, 0x418, 0x300, 0x423, 0x306, 0x418, 0x306, 0x438, 0x306,
    0x435, 0x300, 0x435, 0x308, 0x433, 0x301, 0x456, 0x308, 0x43A, 0x301,
    0x438, 0x300, 0x443, 0x306, 0x474, 0x30F, 0x475, 0x30F, 0x416, 0x306,
    0x436, 0x306, 0x410, 0x306, 0x430, 0x306, 0x410, 0x308, 0x430, 0x308,
    0x415, 0x306, 0x435, 0x306, 0x4D8, 0x308, 0x4D9, 0x308, 0x416, 0x308,
    0x436, 0x308, 0x417, 0x308, 0x437, 0x308, 0x418, 0x304, 0x438, 0x304,
    0x418, 0x308, 0x438, 0x308, 0x41E, 0x308, 0x43E, 0x308, 0x4E8, 0x308,
    0x4E9, 0x308, 0x42D, 0x308, 0x44D, 0x308, 0x423, 0x304, 0x443, 0x304,
    0x423, 0x308, 0x443, 0x308, 0x423, 0x30B, 0x443, 0x30B, 0x427, 0x308,
    0x447, 0x308, 0x42B, 0x308, 0x44B, 0x308, 0x627, 0x653, 0x627, 0x654,
    0x648, 0x654, 0x627, 0x655, 0x64A, 0x654, 0x6D5, 0x654, 0x6C1, 0x654,
    0x6D2, 0x654, 0x928, 0x93C, 0x930, 0x93C, 0x933, 0x93C, 0x915, 0x93C,
    0x916, 0x93C, 0x917, 0x93C, 0x91C, 0x93C, 0x921, 0x93C, 0x922, 0x93C,
    0x92B, 0x93C, 0x92F, 0x93C, 0x9C7, 0x9BE, 0x9C7, 0x9D7, 0x9A1, 0x9BC,
    0x9A2, 0x9BC, 0x9AF, 0x9BC, 0xA32, 0xA3C, 0xA38, 0xA3C, 0xA16, 0xA3C,
    0xA17, 0xA3C, 0xA1C, 0xA3C, 0xA2B, 0xA3C, 0xB47, 0xB56, 0xB47, 0xB3E,
    0xB47, 0xB57, 0xB21, 0xB3C, 0xB22, 0xB3C, 0xB92, 0xBD7, 0xBC6, 0xBBE,
    0xBC7, 0xBBE, 0xBC6, 0xBD7, 0xC46, 0xC56, 0xCBF, 0xCD5, 0xCC6, 0xCD5,
    0xCC6, 0xCD6, 0xCC6, 0xCC2, 0xCC6, 0xCC2, 0xCD5, 0xD46, 0xD3E, 0xD47,
    0xD3E, 0xD46, 0xD57, 0xDD9, 0xDCA, 0xDD9, 0xDCF, 0xDD9, 0xDCF, 0xDCA,
    0xDD9, 0xDDF, 0xF42, 0xFB7, 0xF4C, 0xFB7, 0xF51, 0xFB7, 0xF56, 0xFB7,
    0xF5B, 0xFB7, 0xF40, 0xFB5, 0xF71, 0xF72, 0xF71, 0xF74, 0xFB2, 0xF80,
    0xFB3, 0xF80, 0xF71, 0xF80, 0xF92, 0xFB7, 0xF9C, 0xFB7, 0xFA1, 0xFB7,
    0xFA6, 0xFB7, 0xFAB, 0xFB7, 0xF90, 0xFB5, 0x1025, 0x102E, 0x1B05, 0x1B35,
    0x1B07, 0x1B35, 0x1B09, 0x1B35, 0x1B0B, 0x1B35, 0x1B0D, 0x1B35, 0x1B11, 0x1B35,
    0x1B3A, 0x1B35, 0x1B3C, 0x1B35, 0x1B3E, 0x1B35, 0x1B3F, 0x1B35, 0x1B42, 0x1B35,
    0x41, 0x325, 0x61, 0x325, 0x42, 0x307, 0x62, 0x307, 0x42, 0x323,
    0x62, 0x323, 0x42, 0x331, 0x62, 0x331, 0x43, 0x327, 0x301, 0x63,
    0x327, 0x301, 0x44, 0x307, 0x64, 0x307, 0x44, 0x323, 0x64, 0x323,
    0x44, 0x331, 0x64, 0x331, 0x44, 0x327, 0x64, 0x327, 0x44, 0x32D,
    0x64, 0x32D, 0x45, 0x304, 0x300, 0x65, 0x304, 0x300, 0x45, 0x304,
    0x301, 0x65, 0x304, 0x301, 0x45, 0x32D, 0x65, 0x32D, 0x45, 0x330,
    0x65, 0x330, 0x45, 0x327, 0x306, 0x65, 0x327, 0x306, 0x46, 0x307,
    0x66, 0x307, 0x47, 0x304, 0x67, 0x304, 0x48, 0x307, 0x68, 0x307,
    0x48, 0x323, 0x68, 0x323, 0x48, 0x308, 0x68, 0x308, 0x48, 0x327,
    0x68, 0x327, 0x48, 0x32E, 0x68, 0x32E, 0x49, 0x330, 0x69, 0x330,
    0x49, 0x308, 0x301, 0x69, 0x308, 0x301, 0x4B, 0x301, 0x6B, 0x301,
    0x4B, 0x323, 0x6B, 0x323, 0x4B, 0x331, 0x6B, 0x331, 0x4C, 0x323,
    0x6C, 0x323, 0x4C, 0x323, 0x304, 0x6C, 0x323, 0x304, 0x4C, 0x331,
    0x6C, 0x331, 0x4C, 0x32D, 0x6C, 0x32D, 0x4D, 0x301, 0x6D, 0x301,
    0x4D, 0x307, 0x6D, 0x307, 0x4D, 0x323, 0x6D, 0x323, 0x4E, 0x307,
    0x6E, 0x307, 0x4E, 0x323, 0x6E, 0x323, 0x4E, 0x331, 0x6E, 0x331,
    0x4E, 0x32D, 0x6E, 0x32D, 0x4F, 0x303, 0x301, 0x6F, 0x303, 0x301,
    0x4F, 0x303, 0x308, 0x6F, 0x303, 0x308, 0x4F, 0x304, 0x300, 0x6F,
    0x304, 0x300, 0x4F, 0x304, 0x301, 0x6F, 0x304, 0x301, 0x50, 0x301,
    0x70, 0x301, 0x50, 0x307, 0x70, 0x307, 0x52, 0x307, 0x72, 0x307,
    0x52, 0x323, 0x72, 0x323, 0x52, 0x323, 0x304, 0x72, 0x323, 0x304,
    0x52, 0x331, 0x72, 0x331, 0x53, 0x307, 0x73, 0x307, 0x53, 0x323,
    0x73, 0x323, 0x53, 0x301, 0x307, 0x73, 0x301, 0x307, 0x53, 0x30C,
    0x307, 0x73, 0x30C, 0x307, 0x53, 0x323, 0x307, 0x73, 0x323, 0x307,
    0x54, 0x307, 0x74, 0x307, 0x54, 0x323, 0x74, 0x323, 0x54, 0x331,
    0x74, 0x331, 0x54, 0x32D, 0x74, 0x32D, 0x55, 0x324, 0x75, 0x324,
    0x55, 0x330, 0x75, 0x330, 0x55, 0x32D, 0x75, 0x32D, 0x55, 0x303,
    0x301, 0x75, 0x303, 0x301, 0x55, 0x304, 0x308, 0x75, 0x304, 0x308,
    0x56, 0x303, 0x76, 0x303, 0x56, 0x323, 0x76, 0x323, 0x57, 0x300,
    0x77, 0x300, 0x57, 0x301, 0x77, 0x301, 0x57, 0x308, 0x77, 0x308,
    0x57, 0x307, 0x77, 0x307, 0x57, 0x323, 0x77, 0x323, 0x58, 0x307,
    0x78, 0x307, 0x58, 0x308, 0x78, 0x308, 0x59, 0x307, 0x79, 0x307,
    0x5A, 0x302, 0x7A, 0x302, 0x5A, 0x323, 0x7A, 0x323, 0x5A, 0x331,
    0x7A, 0x331, 0x68, 0x331, 0x74, 0x308, 0x77, 0x30A, 0x79, 0x30A,
    0x17F, 0x307, 0x41, 0x323, 0x61, 0x323, 0x41, 0x309, 0x61, 0x309,
    0x41, 0x302, 0x301, 0x61, 0x302, 0x301, 0x41, 0x302, 0x300, 0x61,
    0x302, 0x300, 0x41, 0x302, 0x309, 0x61, 0x302, 0x309, 0x41, 0x302,
    0x303, 0x61, 0x302, 0x303, 0x41, 0x323, 0x302, 0x61, 0x323, 0x302,
    0x41, 0x306, 0x301, 0x61, 0x306, 0x301, 0x41, 0x306, 0x300, 0x61,
    0x306, 0x300, 0x41, 0x306, 0x309, 0x61, 0x306, 0x309, 0x41, 0x306,
    0x303, 0x61, 0x306, 0x303, 0x41, 0x323, 0x306, 0x61, 0x323, 0x306,
    0x45, 0x323, 0x65, 0x323, 0x45, 0x309, 0x65, 0x309, 0x45, 0x303,
    0x65, 0x303, 0x45, 0x302, 0x301, 0x65, 0x302, 0x301, 0x45, 0x302,
    0x300, 0x65, 0x302, 0x300, 0x45, 0x302, 0x309, 0x65, 0x302, 0x309,
    0x45, 0x302, 0x303, 0x65, 0x302, 0x303, 0x45, 0x323, 0x302, 0x65,
    0x323, 0x302, 0x49, 0x309, 0x69, 0x309, 0x49, 0x323, 0x69, 0x323,
    0x4F, 0x323, 0x6F, 0x323, 0x4F, 0x309, 0x6F, 0x309, 0x4F, 0x302,
    0x301, 0x6F, 0x302, 0x301, 0x4F, 0x302, 0x300, 0x6F, 0x302, 0x300,
    0x4F, 0x302, 0x309, 0x6F, 0x302, 0x309, 0x4F, 0x302, 0x303, 0x6F,
    0x302, 0x303, 0x4F, 0x323, 0x302, 0x6F, 0x323, 0x302, 0x4F, 0x31B,
    0x301, 0x6F, 0x31B, 0x301, 0x4F, 0x31B, 0x300, 0x6F, 0x31B, 0x300,
    0x4F, 0x31B, 0x309, 0x6F, 0x31B, 0x309, 0x4F, 0x31B, 0x303, 0x6F,
    0x31B, 0x303, 0x4F, 0x31B, 0x323, 0x6F, 0x31B, 0x323, 0x55, 0x323,
    0x75, 0x323, 0x55, 0x309, 0x75, 0x309, 0x55, 0x31B, 0x301, 0x75,
    0x31B, 0x301, 0x55, 0x31B, 0x300, 0x75, 0x31B, 0x300, 0x55, 0x31B,
    0x309, 0x75, 0x31B, 0x309, 0x55, 0x31B, 0x303, 0x75, 0x31B, 0x303,
    0x55, 0x31B, 0x323, 0x75, 0x31B, 0x323, 0x59, 0x300, 0x79, 0x300,
    0x59, 0x323, 0x79, 0x323, 0x59, 0x309, 0x79, 0x309, 0x59, 0x303,
    0x79, 0x303, 0x3B1, 0x313, 0x3B1, 0x314, 0x3B1, 0x313, 0x300, 0x3B1,
    0x314, 0x300, 0x3B1, 0x313, 0x301, 0x3B1, 0x314, 0x301, 0x3B1, 0x313,
    0x342, 0x3B1, 0x314, 0x342, 0x391, 0x313, 0x391, 0x314, 0x391, 0x313,
    0x300, 0x391, 0x314, 0x300, 0x391, 0x313, 0x301, 0x391, 0x314, 0x301,
    0x391, 0x313, 0x342, 0x391, 0x314, 0x342, 0x3B5, 0x313, 0x3B5, 0x314,
    0x3B5, 0x313, 0x300, 0x3B5, 0x314, 0x300, 0x3B5, 0x313, 0x301, 0x3B5,
    0x314, 0x301, 0x395, 0x313, 0x395, 0x314, 0x395, 0x313, 0x300, 0x395,
    0x314, 0x300, 0x395, 0x313, 0x301, 0x395, 0x314, 0x301, 0x3B7, 0x313,
    0x3B7, 0x314, 0x3B7, 0x313, 0x300, 0x3B7, 0x314, 0x300, 0x3B7, 0x313,
    0x301, 0x3B7, 0x314, 0x301, 0x3B7, 0x313, 0x342, 0x3B7, 0x314, 0x342,
    0x397, 0x313, 0x397, 0x314, 0x397, 0x313, 0x300, 0x397, 0x314, 0x300,
    0x397, 0x313, 0x301, 0x397, 0x314, 0x301, 0x397, 0x313, 0x342, 0x397,
    0x314, 0x342, 0x3B9, 0x313, 0x3B9, 0x314, 0x3B9, 0x313, 0x300, 0x3B9,
    0x314, 0x300, 0x3B9, 0x313, 0x301, 0x3B9, 0x314, 0x301, 0x3B9, 0x313,
    0x342, 0x3B9, 0x314, 0x342, 0x399, 0x313, 0x399, 0x314, 0x399, 0x313,
    0x300, 0x399, 0x314, 0x300, 0x399, 0x313, 0x301, 0x399, 0x314, 0x301,
    0x399, 0x313, 0x342, 0x399, 0x314, 0x342, 0x3BF, 0x313, 0x3BF, 0x314,
    0x3BF, 0x313, 0x300, 0x3BF, 0x314, 0x300, 0x3BF, 0x313, 0x301, 0x3BF,
    0x314, 0x301, 0x39F, 0x313, 0x39F, 0x314, 0x39F, 0x313, 0x300, 0x39F,
    0x314, 0x300, 0x39F, 0x313, 0x301, 0x39F, 0x314, 0x301, 0x3C5, 0x313,
    0x3C5, 0x314, 0x3C5, 0x313, 0x300, 0x3C5, 0x314, 0x300, 0x3C5, 0x313,
    0x301, 0x3C5, 0x314, 0x301, 0x3C5, 0x313, 0x342, 0x3C5, 0x314, 0x342,
    0x3A5, 0x314, 0x3A5, 0x314, 0x300, 0x3A5, 0x314, 0x301, 0x3A5, 0x314,
    0x342, 0x3C9, 0x313, 0x3C9, 0x314, 0x3C9, 0x313, 0x300, 0x3C9, 0x314,
    0x300, 0x3C9, 0x313, 0x301, 0x3C9, 0x314, 0x301, 0x3C9, 0x313, 0x342,
    0x3C9, 0x314, 0x342, 0x3A9, 0x313, 0x3A9, 0x314, 0x3A9, 0x313, 0x300,
    0x3A9, 0x314, 0x300, 0x3A9, 0x313, 0x301, 0x3A9, 0x314, 0x301, 0x3A9,
    0x313, 0x342, 0x3A9, 0x314, 0x342, 0x3B1, 0x300, 0x3B1, 0x301, 0x3B5,
    0x300, 0x3B5, 0x301, 0x3B7, 0x300, 0x3B7, 0x301, 0x3B9, 0x300, 0x3B9,
    0x301, 0x3BF, 0x300, 0x3BF, 0x301, 0x3C5, 0x300, 0x3C5, 0x301, 0x3C9,
    0x300, 0x3C9, 0x301, 0x3B1, 0x313, 0x345, 0x3B1, 0x314, 0x345, 0x3B1,
    0x313, 0x300, 0x345, 0x3B1, 0x314, 0x300, 0x345, 0x3B1, 0x313, 0x301,
    0x345, 0x3B1, 0x314, 0x301, 0x345, 0x3B1, 0x313, 0x342, 0x345, 0x3B1,
    0x314, 0x342, 0x345, 0x391, 0x313, 0x345, 0x391, 0x314, 0x345, 0x391,
    0x313, 0x300, 0x345, 0x391, 0x314, 0x300, 0x345, 0x391, 0x313, 0x301,
    0x345, 0x391, 0x314, 0x301, 0x345, 0x391, 0x313, 0x342, 0x345, 0x391,
    0x314, 0x342, 0x345, 0x3B7, 0x313, 0x345, 0x3B7, 0x314, 0x345, 0x3B7,
    0x313, 0x300, 0x345, 0x3B7, 0x314, 0x300, 0x345, 0x3B7, 0x313, 0x301,
    0x345, 0x3B7, 0x314, 0x301, 0x345, 0x3B7, 0x313, 0x342, 0x345, 0x3B7,
    0x314, 0x342, 0x345, 0x397, 0x313, 0x345, 0x397, 0x314, 0x345, 0x397,
    0x313, 0x300, 0x345, 0x397, 0x314, 0x300, 0x345, 0x397, 0x313, 0x301,
    0x345, 0x397, 0x314, 0x301, 0x345, 0x397, 0x313, 0x342, 0x345, 0x397,
    0x314, 0x342, 0x345, 0x3C9, 0x313, 0x345, 0x3C9, 0x314, 0x345, 0x3C9,
    0x313, 0x300, 0x345, 0x3C9, 0x314, 0x300, 0x345, 0x3C9, 0x313, 0x301,
    0x345, 0x3C9, 0x314, 0x301, 0x345, 0x3C9, 0x313, 0x342, 0x345, 0x3C9,
    0x314, 0x342, 0x345, 0x3A9, 0x313, 0x345, 0x3A9, 0x314, 0x345, 0x3A9,
    0x313, 0x300, 0x345, 0x3A9, 0x314, 0x300, 0x345, 0x3A9, 0x313, 0x301,
    0x345, 0x3A9, 0x314, 0x301, 0x345, 0x3A9, 0x313, 0x342, 0x345, 0x3A9,
    0x314, 0x342, 0x345, 0x3B1, 0x306, 0x3B1, 0x304, 0x3B1, 0x300, 0x345,
    0x3B1, 0x345, 0x3B1, 0x301, 0x345, 0x3B1, 0x342, 0x3B1, 0x342, 0x345,
    0x391, 0x306, 0x391, 0x304, 0x391, 0x300, 0x391, 0x301, 0x391, 0x345,
    0x3B9, 0xA8, 0x342, 0x3B7, 0x300, 0x345, 0x3B7, 0x345, 0x3B7, 0x301,
    0x345, 0x3B7, 0x342, 0x3B7, 0x342, 0x345, 0x395, 0x300, 0x395, 0x301,
    0x397, 0x300, 0x397, 0x301, 0x397, 0x345, 0x1FBF, 0x300, 0x1FBF, 0x301,
    0x1FBF, 0x342, 0x3B9, 0x306, 0x3B9, 0x304, 0x3B9, 0x308, 0x300, 0x3B9,
    0x308, 0x301, 0x3B9, 0x342, 0x3B9, 0x308, 0x342, 0x399, 0x306, 0x399,
    0x304, 0x399, 0x300, 0x399, 0x301, 0x1FFE, 0x300, 0x1FFE, 0x301, 0x1FFE,
    0x342, 0x3C5, 0x306, 0x3C5, 0x304, 0x3C5, 0x308, 0x300, 0x3C5, 0x308,
    0x301, 0x3C1, 0x313, 0x3C1, 0x314, 0x3C5, 0x342, 0x3C5, 0x308, 0x342,
    0x3A5, 0x306, 0x3A5, 0x304, 0x3A5, 0x300, 0x3A5, 0x301, 0x3A1, 0x314,
    0xA8, 0x300, 0xA8, 0x301, 0x60, 0x3C9, 0x300, 0x345, 0x3C9, 0x345,
    0x3C9, 0x301, 0x345, 0x3C9, 0x342, 0x3C9, 0x342, 0x345, 0x39F, 0x300,
    0x39F, 0x301, 0x3A9, 0x300, 0x3A9, 0x301, 0x3A9, 0x345, 0xB4, 0x2002,
    0x2003, 0x3A9, 0x4B, 0x41, 0x30A, 0x2190, 0x338, 0x2192, 0x338, 0x2194,
    0x338, 0x21D0, 0x338, 0x21D4, 0x338, 0x21D2, 0x338, 0x2203, 0x338, 0x2208,
    0x338, 0x220B, 0x338, 0x2223, 0x338, 0x2225, 0x338, 0x223C, 0x338, 0x2243,
    0x338, 0x2245, 0x338, 0x2248, 0x338, 0x3D, 0x338, 0x2261, 0x338, 0x224D,
    0x338, 0x3C, 0x338, 0x3E, 0x338, 0x2264, 0x338, 0x2265, 0x338, 0x2272,
    0x338, 0x2273, 0x338, 0x2276, 0x338, 0x2277, 0x338, 0x227A, 0x338, 0x227B,
    0x338, 0x2282, 0x338, 0x2283, 0x338, 0x2286, 0x338, 0x2287, 0x338, 0x22A2,
    0x338, 0x22A8, 0x338, 0x22A9, 0x338, 0x22AB, 0x338, 0x227C, 0x338, 0x227D,
    0x338, 0x2291, 0x338, 0x2292, 0x338, 0x22B2, 0x338, 0x22B3, 0x338, 0x22B4,
    0x338, 0x22B5, 0x338, 0x3008, 0x3009, 0x2ADD, 0x338, 0x304B, 0x3099, 0x304D,
    0x3099, 0x304F, 0x3099, 0x3051, 0x3099, 0x3053, 0x3099, 0x3055, 0x3099, 0x3057,
    0x3099, 0x3059, 0x3099, 0x305B, 0x3099, 0x305D, 0x3099, 0x305F, 0x3099, 0x3061,
    0x3099, 0x3064, 0x3099, 0x3066, 0x3099, 0x3068, 0x3099, 0x306F, 0x3099, 0x306F,
    0x309A, 0x3072, 0x3099, 0x3072, 0x309A, 0x3075, 0x3099, 0x3075, 0x309A, 0x3078,
    0x3099, 0x3078, 0x309A, 0x307B, 0x3099, 0x307B, 0x309A, 0x3046, 0x3099, 0x309D,
    0x3099, 0x30AB, 0x3099, 0x30AD, 0x3099, 0x30AF, 0x3099, 0x30B1, 0x3099, 0x30B3,
    0x3099, 0x30B5, 0x3099, 0x30B7, 0x3099, 0x30B9, 0x3099, 0x30BB, 0x3099, 0x30BD,
    0x3099, 0x30BF, 0x3099, 0x30C1, 0x3099, 0x30C4, 0x3099, 0x30C6, 0x3099, 0x30C8,
    0x3099, 0x30CF, 0x3099, 0x30CF, 0x309A, 0x30D2, 0x3099, 0x30D2, 0x309A, 0x30D5,
    0x3099, 0x30D5, 0x309A, 0x30D8, 0x3099, 0x30D8, 0x309A, 0x30DB, 0x3099, 0x30DB,
    0x309A, 0x30A6, 0x3099, 0x30EF, 0x3099, 0x30F0, 0x3099, 0x30F1, 0x3099, 0x30F2,
    0x3099, 0x30FD, 0x3099, 0x8C48, 0x66F4, 0x8ECA, 0x8CC8, 0x6ED1, 0x4E32, 0x53E5,
    0x9F9C, 0x9F9C, 0x5951, 0x91D1, 0x5587, 0x5948, 0x61F6, 0x7669, 0x7F85, 0x863F,
    0x87BA, 0x88F8, 0x908F, 0x6A02, 0x6D1B, 0x70D9, 0x73DE, 0x843D, 0x916A, 0x99F1,
    0x4E82, 0x5375, 0x6B04, 0x721B, 0x862D, 0x9E1E, 0x5D50, 0x6FEB, 0x85CD, 0x8964,
    0x62C9, 0x81D8, 0x881F, 0x5ECA, 0x6717, 0x6D6A, 0x72FC, 0x90CE, 0x4F86, 0x51B7,
    0x52DE, 0x64C4, 0x6AD3, 0x7210, 0x76E7, 0x8001, 0x8606, 0x865C, 0x8DEF, 0x9732,
    0x9B6F, 0x9DFA, 0x788C, 0x797F, 0x7DA0, 0x83C9, 0x9304, 0x9E7F, 0x8AD6, 0x58DF,
    0x5F04, 0x7C60, 0x807E, 0x7262, 0x78CA, 0x8CC2, 0x96F7, 0x58D8, 0x5C62, 0x6A13,
    0x6DDA, 0x6F0F, 0x7D2F, 0x7E37, 0x964B, 0x52D2, 0x808B, 0x51DC, 0x51CC, 0x7A1C,
    0x7DBE, 0x83F1, 0x9675, 0x8B80, 0x62CF, 0x6A02, 0x8AFE, 0x4E39, 0x5BE7, 0x6012,
    0x7387, 0x7570, 0x5317, 0x78FB, 0x4FBF, 0x5FA9, 0x4E0D, 0x6CCC, 0x6578, 0x7D22,
    0x53C3, 0x585E, 0x7701, 0x8449, 0x8AAA, 0x6BBA, 0x8FB0, 0x6C88, 0x62FE, 0x82E5,
    0x63A0, 0x7565, 0x4EAE, 0x5169, 0x51C9, 0x6881, 0x7CE7, 0x826F, 0x8AD2, 0x91CF,
    0x52F5, 0x5442, 0x5973, 0x5EEC, 0x65C5, 0x6FFE, 0x792A, 0x95AD, 0x9A6A, 0x9E97,
    0x9ECE, 0x529B, 0x66C6, 0x6B77, 0x8F62, 0x5E74, 0x6190, 0x6200, 0x649A, 0x6F23,
    0x7149, 0x7489, 0x79CA, 0x7DF4, 0x806F, 0x8F26, 0x84EE, 0x9023, 0x934A, 0x5217,
    0x52A3, 0x54BD, 0x70C8, 0x88C2, 0x8AAA, 0x5EC9, 0x5FF5, 0x637B, 0x6BAE, 0x7C3E,
    0x7375, 0x4EE4, 0x56F9, 0x5BE7, 0x5DBA, 0x601C, 0x73B2, 0x7469, 0x7F9A, 0x8046,
    0x9234, 0x96F6, 0x9748, 0x9818, 0x4F8B, 0x79AE, 0x91B4, 0x96B8, 0x60E1, 0x4E86,
    0x50DA, 0x5BEE, 0x5C3F, 0x6599, 0x6A02, 0x71CE, 0x7642, 0x84FC, 0x907C, 0x9F8D,
    0x6688, 0x962E, 0x5289, 0x677B, 0x67F3, 0x6D41, 0x6E9C, 0x7409, 0x7559, 0x786B,
    0x7D10, 0x985E, 0x516D, 0x622E, 0x9678, 0x502B, 0x5D19, 0x6DEA, 0x8F2A, 0x5F8B,
    0x6144, 0x6817, 0x7387, 0x9686, 0x5229, 0x540F, 0x5C65, 0x6613, 0x674E, 0x68A8,
    0x6CE5, 0x7406, 0x75E2, 0x7F79, 0x88CF, 0x88E1, 0x91CC, 0x96E2, 0x533F, 0x6EBA,
    0x541D, 0x71D0, 0x7498, 0x85FA, 0x96A3, 0x9C57, 0x9E9F, 0x6797, 0x6DCB, 0x81E8,
    0x7ACB, 0x7B20, 0x7C92, 0x72C0, 0x7099, 0x8B58, 0x4EC0, 0x8336, 0x523A, 0x5207,
    0x5EA6, 0x62D3, 0x7CD6, 0x5B85, 0x6D1E, 0x66B4, 0x8F3B, 0x884C, 0x964D, 0x898B,
    0x5ED3, 0x5140, 0x55C0, 0x585A, 0x6674, 0x51DE, 0x732A, 0x76CA, 0x793C, 0x795E,
    0x7965, 0x798F, 0x9756, 0x7CBE, 0x7FBD, 0x8612, 0x8AF8, 0x9038, 0x90FD, 0x98EF,
    0x98FC, 0x9928, 0x9DB4, 0x90DE, 0x96B7, 0x4FAE, 0x50E7, 0x514D, 0x52C9, 0x52E4,
    0x5351, 0x559D, 0x5606, 0x5668, 0x5840, 0x58A8, 0x5C64, 0x5C6E, 0x6094, 0x6168,
    0x618E, 0x61F2, 0x654F, 0x65E2, 0x6691, 0x6885, 0x6D77, 0x6E1A, 0x6F22, 0x716E,
    0x722B, 0x7422, 0x7891, 0x793E, 0x7949, 0x7948, 0x7950, 0x7956, 0x795D, 0x798D,
    0x798E, 0x7A40, 0x7A81, 0x7BC0, 0x7DF4, 0x7E09, 0x7E41, 0x7F72, 0x8005, 0x81ED,
    0x8279, 0x8279, 0x8457, 0x8910, 0x8996, 0x8B01, 0x8B39, 0x8CD3, 0x8D08, 0x8FB6,
    0x9038, 0x96E3, 0x97FF, 0x983B, 0x6075, 0x242EE, 0x8218, 0x4E26, 0x51B5, 0x5168,
    0x4F80, 0x5145, 0x5180, 0x52C7, 0x52FA, 0x559D, 0x5555, 0x5599, 0x55E2, 0x585A,
    0x58B3, 0x5944, 0x5954, 0x5A62, 0x5B28, 0x5ED2, 0x5ED9, 0x5F69, 0x5FAD, 0x60D8,
    0x614E, 0x6108, 0x618E, 0x6160, 0x61F2, 0x6234, 0x63C4, 0x641C, 0x6452, 0x6556,
    0x6674, 0x6717, 0x671B, 0x6756, 0x6B79, 0x6BBA, 0x6D41, 0x6EDB, 0x6ECB, 0x6F22,
    0x701E, 0x716E, 0x77A7, 0x7235, 0x72AF, 0x732A, 0x7471, 0x7506, 0x753B, 0x761D,
    0x761F, 0x76CA, 0x76DB, 0x76F4, 0x774A, 0x7740, 0x78CC, 0x7AB1, 0x7BC0, 0x7C7B,
    0x7D5B, 0x7DF4, 0x7F3E, 0x8005, 0x8352, 0x83EF, 0x8779, 0x8941, 0x8986, 0x8996,
    0x8ABF, 0x8AF8, 0x8ACB, 0x8B01, 0x8AFE, 0x8AED, 0x8B39, 0x8B8A, 0x8D08, 0x8F38,
    0x9072, 0x9199, 0x9276, 0x967C, 0x96E3, 0x9756, 0x97DB, 0x97FF, 0x980B, 0x983B,
    0x9B12, 0x9F9C, 0x2284A, 0x22844, 0x233D5, 0x3B9D, 0x4018, 0x4039, 0x25249, 0x25CD0,
    0x27ED3, 0x9F43, 0x9F8E, 0x5D9, 0x5B4, 0x5F2, 0x5B7, 0x5E9, 0x5C1, 0x5E9,
    0x5C2, 0x5E9, 0x5BC, 0x5C1, 0x5E9, 0x5BC, 0x5C2, 0x5D0, 0x5B7, 0x5D0,
    0x5B8, 0x5D0, 0x5BC, 0x5D1, 0x5BC, 0x5D2, 0x5BC, 0x5D3, 0x5BC, 0x5D4,
    0x5BC, 0x5D5, 0x5BC, 0x5D6, 0x5BC, 0x5D8, 0x5BC, 0x5D9, 0x5BC, 0x5DA,
    0x5BC, 0x5DB, 0x5BC, 0x5DC, 0x5BC, 0x5DE, 0x5BC, 0x5E0, 0x5BC, 0x5E1,
    0x5BC, 0x5E3, 0x5BC, 0x5E4, 0x5BC, 0x5E6, 0x5BC, 0x5E7, 0x5BC, 0x5E8,
    0x5BC, 0x5E9, 0x5BC, 0x5EA, 0x5BC, 0x5D5, 0x5B9, 0x5D1, 0x5BF, 0x5DB,
    0x5BF, 0x5E4, 0x5BF, 0x11099, 0x110BA, 0x1109B, 0x110BA, 0x110A5, 0x110BA, 0x11131,
    0x11127, 0x11132, 0x11127, 0x11347, 0x1133E, 0x11347, 0x11357, 0x114B9, 0x114BA, 0x114B9,
    0x114B0, 0x114B9, 0x114BD, 0x115B8, 0x115AF, 0x115B9, 0x115AF, 0x1D157, 0x1D165, 0x1D158,
    0x1D165, 0x1D158, 0x1D165, 0x1D16E, 0x1D158, 0x1D165, 0x1D16F, 0x1D158, 0x1D165, 0x1D170,
    0x1D158, 0x1D165, 0x1D171, 0x1D158, 0x1D165, 0x1D172, 0x1D1B9, 0x1D165, 0x1D1BA, 0x1D165,
    0x1D1B9, 0x1D165, 0x1D16E, 0x1D1BA, 0x1D165, 0x1D16E, 0x1D1B9, 0x1D165, 0x1D16F, 0x1D1BA,
    0x1D165, 0x1D16F, 0x4E3D, 0x4E38, 0x4E41, 0x20122, 0x4F60, 0x4FAE, 0x4FBB, 0x5002,
    0x507A, 0x5099, 0x50E7, 0x50CF, 0x349E, 0x2063A, 0x514D, 0x5154, 0x5164, 0x5177,
    0x2051C, 0x34B9, 0x5167, 0x518D, 0x2054B, 0x5197, 0x51A4, 0x4ECC, 0x51AC, 0x51B5,
    0x291DF, 0x51F5, 0x5203, 0x34DF, 0x523B, 0x5246, 0x5272, 0x5277, 0x3515, 0x52C7,
    0x52C9, 0x52E4, 0x52FA, 0x5305, 0x5306, 0x5317, 0x5349, 0x5351, 0x535A, 0x5373,
    0x537D, 0x537F, 0x537F, 0x537F, 0x20A2C, 0x7070, 0x53CA, 0x53DF, 0x20B63, 0x53EB,
    0x53F1, 0x5406, 0x549E, 0x5438, 0x5448, 0x5468, 0x54A2, 0x54F6, 0x5510, 0x5553,
    0x5563, 0x5584, 0x5584, 0x5599, 0x55AB, 0x55B3, 0x55C2, 0x5716, 0x5606, 0x5717,
    0x5651, 0x5674, 0x5207, 0x58EE, 0x57CE, 0x57F4, 0x580D, 0x578B, 0x5832, 0x5831,
    0x58AC, 0x214E4, 0x58F2, 0x58F7, 0x5906, 0x591A, 0x5922, 0x5962, 0x216A8, 0x216EA,
    0x59EC, 0x5A1B, 0x5A27, 0x59D8, 0x5A66, 0x36EE, 0x36FC, 0x5B08, 0x5B3E, 0x5B3E,
    0x219C8, 0x5BC3, 0x5BD8, 0x5BE7, 0x5BF3, 0x21B18, 0x5BFF, 0x5C06, 0x5F53, 0x5C22,
    0x3781, 0x5C60, 0x5C6E, 0x5CC0, 0x5C8D, 0x21DE4, 0x5D43, 0x21DE6, 0x5D6E, 0x5D6B,
    0x5D7C, 0x5DE1, 0x5DE2, 0x382F, 0x5DFD, 0x5E28, 0x5E3D, 0x5E69, 0x3862, 0x22183,
    0x387C, 0x5EB0, 0x5EB3, 0x5EB6, 0x5ECA, 0x2A392, 0x5EFE, 0x22331, 0x22331, 0x8201,
    0x5F22, 0x5F22, 0x38C7, 0x232B8, 0x261DA, 0x5F62, 0x5F6B, 0x38E3, 0x5F9A, 0x5FCD,
    0x5FD7, 0x5FF9, 0x6081, 0x393A, 0x391C, 0x6094, 0x226D4, 0x60C7, 0x6148, 0x614C,
    0x614E, 0x614C, 0x617A, 0x618E, 0x61B2, 0x61A4, 0x61AF, 0x61DE, 0x61F2, 0x61F6,
    0x6210, 0x621B, 0x625D, 0x62B1, 0x62D4, 0x6350, 0x22B0C, 0x633D, 0x62FC, 0x6368,
    0x6383, 0x63E4, 0x22BF1, 0x6422, 0x63C5, 0x63A9, 0x3A2E, 0x6469, 0x647E, 0x649D,
    0x6477, 0x3A6C, 0x654F, 0x656C, 0x2300A, 0x65E3, 0x66F8, 0x6649, 0x3B19, 0x6691,
    0x3B08, 0x3AE4, 0x5192, 0x5195, 0x6700, 0x669C, 0x80AD, 0x43D9, 0x6717, 0x671B,
    0x6721, 0x675E, 0x6753, 0x233C3, 0x3B49, 0x67FA, 0x6785, 0x6852, 0x6885, 0x2346D,
    0x688E, 0x681F, 0x6914, 0x3B9D, 0x6942, 0x69A3, 0x69EA, 0x6AA8, 0x236A3, 0x6ADB,
    0x3C18, 0x6B21, 0x238A7, 0x6B54, 0x3C4E, 0x6B72, 0x6B9F, 0x6BBA, 0x6BBB, 0x23A8D,
    0x21D0B, 0x23AFA, 0x6C4E, 0x23CBC, 0x6CBF, 0x6CCD, 0x6C67, 0x6D16, 0x6D3E, 0x6D77,
    0x6D41, 0x6D69, 0x6D78, 0x6D85, 0x23D1E, 0x6D34, 0x6E2F, 0x6E6E, 0x3D33, 0x6ECB,
    0x6EC7, 0x23ED1, 0x6DF9, 0x6F6E, 0x23F5E, 0x23F8E, 0x6FC6, 0x7039, 0x701E, 0x701B,
    0x3D96, 0x704A, 0x707D, 0x7077, 0x70AD, 0x20525, 0x7145, 0x24263, 0x719C, 0x243AB,
    0x7228, 0x7235, 0x7250, 0x24608, 0x7280, 0x7295, 0x24735, 0x24814, 0x737A, 0x738B,
    0x3EAC, 0x73A5, 0x3EB8, 0x3EB8, 0x7447, 0x745C, 0x7471, 0x7485, 0x74CA, 0x3F1B,
    0x7524, 0x24C36, 0x753E, 0x24C92, 0x7570, 0x2219F, 0x7610, 0x24FA1, 0x24FB8, 0x25044,
    0x3FFC, 0x4008, 0x76F4, 0x250F3, 0x250F2, 0x25119, 0x25133, 0x771E, 0x771F, 0x771F,
    0x774A, 0x4039, 0x778B, 0x4046, 0x4096, 0x2541D, 0x784E, 0x788C, 0x78CC, 0x40E3,
    0x25626, 0x7956, 0x2569A, 0x256C5, 0x798F, 0x79EB, 0x412F, 0x7A40, 0x7A4A, 0x7A4F,
    0x2597C, 0x25AA7, 0x25AA7, 0x7AEE, 0x4202, 0x25BAB, 0x7BC6, 0x7BC9, 0x4227, 0x25C80,
    0x7CD2, 0x42A0, 0x7CE8, 0x7CE3, 0x7D00, 0x25F86, 0x7D63, 0x4301, 0x7DC7, 0x7E02,
    0x7E45, 0x4334, 0x26228, 0x26247, 0x4359, 0x262D9, 0x7F7A, 0x2633E, 0x7F95, 0x7FFA,
    0x8005, 0x264DA, 0x26523, 0x8060, 0x265A8, 0x8070, 0x2335F, 0x43D5, 0x80B2, 0x8103,
    0x440B, 0x813E, 0x5AB5, 0x267A7, 0x267B5, 0x23393, 0x2339C, 0x8201, 0x8204, 0x8F9E,
    0x446B, 0x8291, 0x828B, 0x829D, 0x52B3, 0x82B1, 0x82B3, 0x82BD, 0x82E6, 0x26B3C,
    0x82E5, 0x831D, 0x8363, 0x83AD, 0x8323, 0x83BD, 0x83E7, 0x8457, 0x8353, 0x83CA,
    0x83CC, 0x83DC, 0x26C36, 0x26D6B, 0x26CD5, 0x452B, 0x84F1, 0x84F3, 0x8516, 0x273CA,
    0x8564, 0x26F2C, 0x455D, 0x4561, 0x26FB1, 0x270D2, 0x456B, 0x8650, 0x865C, 0x8667,
    0x8669, 0x86A9, 0x8688, 0x870E, 0x86E2, 0x8779, 0x8728, 0x876B, 0x8786, 0x45D7,
    0x87E1, 0x8801, 0x45F9, 0x8860, 0x8863, 0x27667, 0x88D7, 0x88DE, 0x4635, 0x88FA,
    0x34BB, 0x278AE, 0x27966, 0x46BE, 0x46C7, 0x8AA0, 0x8AED, 0x8B8A, 0x8C55, 0x27CA8,
    0x8CAB, 0x8CC1, 0x8D1B, 0x8D77, 0x27F2F, 0x20804, 0x8DCB, 0x8DBC, 0x8DF0, 0x208DE,
    0x8ED4, 0x8F38, 0x285D2, 0x285ED, 0x9094, 0x90F1, 0x9111, 0x2872E, 0x911B, 0x9238,
    0x92D7, 0x92D8, 0x927C, 0x93F9, 0x9415, 0x28BFA, 0x958B, 0x4995, 0x95B7, 0x28D77,
    0x49E6, 0x96C3, 0x5DB2, 0x9723, 0x29145, 0x2921A, 0x4A6E, 0x4A76, 0x97E0, 0x2940A,
    0x4AB2, 0x29496, 0x980B, 0x980B, 0x9829, 0x295B6, 0x98E2, 0x4B33, 0x9929, 0x99A7,
    0x99C2, 0x99FE, 0x4BCE, 0x29B30, 0x9B12, 0x9C40, 0x9CFD, 0x4CCE, 0x4CED, 0x9D67,
    0x2A0CE, 0x4CF8, 0x2A105, 0x2A20E, 0x2A291, 0x9EBB, 0x4D56, 0x9EF9, 0x9EFE, 0x9F05,
    0x9F0F, 0x9F16, 0x9F3B, 0x2A600,
};

// Canonical compositions: (first, second) -> primary composite, sorted by (first, second);
// composition exclusions are absent, Hangul syllables are algorithmic (940 pairs).
inline constexpr Composition kCompositions[] = {
    {0x3C, 0x338, 0x226E}, {0x3D, 0x338, 0x2260}, {0x3E, 0x338, 0x226F}, {0x41, 0x300, 0xC0},
    {0x41, 0x301, 0xC1}, {0x41, 0x302, 0xC2}, {0x41, 0x303, 0xC3}, {0x41, 0x304, 0x100},
    {0x41, 0x306, 0x102}, {0x41, 0x307, 0x226}, {0x41, 0x308, 0xC4}, {0x41, 0x309, 0x1EA2},
    {0x41, 0x30A, 0xC5}, {0x41, 0x30C, 0x1CD}, {0x41, 0x30F, 0x200}, {0x41, 0x311, 0x202},
    {0x41, 0x323, 0x1EA0}, {0x41, 0x325, 0x1E00}, {0x41, 0x328, 0x104}, {0x42, 0x307, 0x1E02},
    {0x42, 0x323, 0x1E04}, {0x42, 0x331, 0x1E06}, {0x43, 0x301, 0x106}, {0x43, 0x302, 0x108},
    {0x43, 0x307, 0x10A}, {0x43, 0x30C, 0x10C}, {0x43, 0x327, 0xC7}, {0x44, 0x307, 0x1E0A},
    {0x44, 0x30C, 0x10E}, {0x44, 0x323, 0x1E0C}, {0x44, 0x327, 0x1E10}, {0x44, 0x32D, 0x1E12},
    {0x44, 0x331, 0x1E0E}, {0x45, 0x300, 0xC8}, {0x45, 0x301, 0xC9}, {0x45, 0x302, 0xCA},
    {0x45, 0x303, 0x1EBC}, {0x45, 0x304, 0x112}, {0x45, 0x306, 0x114}, {0x45, 0x307, 0x116},
    {0x45, 0x308, 0xCB}, {0x45, 0x309, 0x1EBA}, {0x45, 0x30C, 0x11A}, {0x45, 0x30F, 0x204},
    {0x45, 0x311, 0x206}, {0x45, 0x323, 0x1EB8}, {0x45, 0x327, 0x228}, {0x45, 0x328, 0x118},
    {0x45, 0x32D, 0x1E18}, {0x45, 0x330, 0x1E1A}, {0x46, 0x307, 0x1E1E}, {0x47, 0x301, 0x1F4},
    {0x47, 0x302, 0x11C}, {0x47, 0x304, 0x1E20}, {0x47, 0x306, 0x11E}, {0x47, 0x307, 0x120},
    {0x47, 0x30C, 0x1E6}, {0x47, 0x327, 0x122}, {0x48, 0x302, 0x124}, {0x48, 0x307, 0x1E22},
    {0x48, 0x308, 0x1E26}, {0x48, 0x30C, 0x21E}, {0x48, 0x323, 0x1E24}, {0x48, 0x327, 0x1E28},
    {0x48, 0x32E, 0x1E2A}, {0x49, 0x300, 0xCC}, {0x49, 0x301, 0xCD}, {0x49, 0x302, 0xCE},
    {0x49, 0x303, 0x128}, {0x49, 0x304, 0x12A}, {0x49, 0x306, 0x12C}, {0x49, 0x307, 0x130},
    {0x49, 0x308, 0xCF}, {0x49, 0x309, 0x1EC8}, {0x49, 0x30C, 0x1CF}, {0x49, 0x30F, 0x208},
    {0x49, 0x311, 0x20A}, {0x49, 0x323, 0x1ECA}, {0x49, 0x328, 0x12E}, {0x49, 0x330, 0x1E2C},
    {0x4A, 0x302, 0x134}, {0x4B, 0x301, 0x1E30}, {0x4B, 0x30C, 0x1E8}, {0x4B, 0x323, 0x1E32},
    {0x4B, 0x327, 0x136}, {0x4B, 0x331, 0x1E34}, {0x4C, 0x301, 0x139}, {0x4C, 0x30C, 0x13D},
    {0x4C, 0x323, 0x1E36}, {0x4C, 0x327, 0x13B}, {0x4C, 0x32D, 0x1E3C}, {0x4C, 0x331, 0x1E3A},
    {0x4D, 0x301, 0x1E3E}, {0x4D, 0x307, 0x1E40}, {0x4D, 0x323, 0x1E42}, {0x4E, 0x300, 0x1F8},
    {0x4E, 0x301, 0x143}, {0x4E, 0x303, 0xD1}, {0x4E, 0x307, 0x1E44}, {0x4E, 0x30C, 0x147},
    {0x4E, 0x323, 0x1E46}, {0x4E, 0x327, 0x145}, {0x4E, 0x32D, 0x1E4A}, {0x4E, 0x331, 0x1E48},
    {0x4F, 0x300, 0xD2}, {0x4F, 0x301, 0xD3}, {0x4F, 0x302, 0xD4}, {0x4F, 0x303, 0xD5},
    {0x4F, 0x304, 0x14C}, {0x4F, 0x306, 0x14E}, {0x4F, 0x307, 0x22E}, {0x4F, 0x308, 0xD6},
    {0x4F, 0x309, 0x1ECE}, {0x4F, 0x30B, 0x150}, {0x4F, 0x30C, 0x1D1}, {0x4F, 0x30F, 0x20C},
    {0x4F, 0x311, 0x20E}, {0x4F, 0x31B, 0x1A0}, {0x4F, 0x323, 0x1ECC}, {0x4F, 0x328, 0x1EA},
    {0x50, 0x301, 0x1E54}, {0x50, 0x307, 0x1E56}, {0x52, 0x301, 0x154}, {0x52, 0x307, 0x1E58},
    {0x52, 0x30C, 0x158}, {0x52, 0x30F, 0x210}, {0x52, 0x311, 0x212}, {0x52, 0x323, 0x1E5A},
    {0x52, 0x327, 0x156}, {0x52, 0x331, 0x1E5E}, {0x53, 0x301, 0x15A}, {0x53, 0x302, 0x15C},
    {0x53, 0x307, 0x1E60}, {0x53, 0x30C, 0x160}, {0x53, 0x323, 0x1E62}, {0x53, 0x326, 0x218},
    {0x53, 0x327, 0x15E}, {0x54, 0x307, 0x1E6A}, {0x54, 0x30C, 0x164}, {0x54, 0x323, 0x1E6C},
    {0x54, 0x326, 0x21A}, {0x54, 0x327, 0x162}, {0x54, 0x32D, 0x1E70}, {0x54, 0x331, 0x1E6E},
    {0x55, 0x300, 0xD9}, {0x55, 0x301, 0xDA}, {0x55, 0x302, 0xDB}, {0x55, 0x303, 0x168},
    {0x55, 0x304, 0x16A}, {0x55, 0x306, 0x16C}, {0x55, 0x308, 0xDC}, {0x55, 0x309, 0x1EE6},
    {0x55, 0x30A, 0x16E}, {0x55, 0x30B, 0x170}, {0x55, 0x30C, 0x1D3}, {0x55, 0x30F, 0x214},
    {0x55, 0x311, 0x216}, {0x55, 0x31B, 0x1AF}, {0x55, 0x323, 0x1EE4}, {0x55, 0x324, 0x1E72},
    {0x55, 0x328, 0x172}, {0x55, 0x32D, 0x1E76}, {0x55, 0x330, 0x1E74}, {0x56, 0x303, 0x1E7C},
    {0x56, 0x323, 0x1E7E}, {0x57, 0x300, 0x1E80}, {0x57, 0x301, 0x1E82}, {0x57, 0x302, 0x174},
    {0x57, 0x307, 0x1E86}, {0x57, 0x308, 0x1E84}, {0x57, 0x323, 0x1E88}, {0x58, 0x307, 0x1E8A},
    {0x58, 0x308, 0x1E8C}, {0x59, 0x300, 0x1EF2}, {0x59, 0x301, 0xDD}, {0x59, 0x302, 0x176},
    {0x59, 0x303, 0x1EF8}, {0x59, 0x304, 0x232}, {0x59, 0x307, 0x1E8E}, {0x59, 0x308, 0x178},
    {0x59, 0x309, 0x1EF6}, {0x59, 0x323, 0x1EF4}, {0x5A, 0x301, 0x179}, {0x5A, 0x302, 0x1E90},
    {0x5A, 0x307, 0x17B}, {0x5A, 0x30C, 0x17D}, {0x5A, 0x323, 0x1E92}, {0x5A, 0x331, 0x1E94},
    {0x61, 0x300, 0xE0}, {0x61, 0x301, 0xE1}, {0x61, 0x302, 0xE2}, {0x61, 0x303, 0xE3},
    {0x61, 0x304, 0x101}, {0x61, 0x306, 0x103}, {0x61, 0x307, 0x227}, {0x61, 0x308, 0xE4},
    {0x61, 0x309, 0x1EA3}, {0x61, 0x30A, 0xE5}, {0x61, 0x30C, 0x1CE}, {0x61, 0x30F, 0x201},
    {0x61, 0x311, 0x203}, {0x61, 0x323, 0x1EA1}, {0x61, 0x325, 0x1E01}, {0x61, 0x328, 0x105},
    {0x62, 0x307, 0x1E03}, {0x62, 0x323, 0x1E05}, {0x62, 0x331, 0x1E07}, {0x63, 0x301, 0x107},
    {0x63, 0x302, 0x109}, {0x63, 0x307, 0x10B}, {0x63, 0x30C, 0x10D}, {0x63, 0x327, 0xE7},
    {0x64, 0x307, 0x1E0B}, {0x64, 0x30C, 0x10F}, {0x64, 0x323, 0x1E0D}, {0x64, 0x327, 0x1E11},
    {0x64, 0x32D, 0x1E13}, {0x64, 0x331, 0x1E0F}, {0x65, 0x300, 0xE8}, {0x65, 0x301, 0xE9},
    {0x65, 0x302, 0xEA}, {0x65, 0x303, 0x1EBD}, {0x65, 0x304, 0x113}, {0x65, 0x306, 0x115},
    {0x65, 0x307, 0x117}, {0x65, 0x308, 0xEB}, {0x65, 0x309, 0x1EBB}, {0x65, 0x30C, 0x11B},
    {0x65, 0x30F, 0x205}, {0x65, 0x311, 0x207}, {0x65, 0x323, 0x1EB9}, {0x65, 0x327, 0x229},
    {0x65, 0x328, 0x119}, {0x65, 0x32D, 0x1E19}, {0x65, 0x330, 0x1E1B}, {0x66, 0x307, 0x1E1F},
    {0x67, 0x301, 0x1F5}, {0x67, 0x302, 0x11D}, {0x67, 0x304, 0x1E21}, {0x67, 0x306, 0x11F},
    {0x67, 0x307, 0x121}, {0x67, 0x30C, 0x1E7}, {0x67, 0x327, 0x123}, {0x68, 0x302, 0x125},
    {0x68, 0x307, 0x1E23}, {0x68, 0x308, 0x1E27}, {0x68, 0x30C, 0x21F}, {0x68, 0x323, 0x1E25},
    {0x68, 0x327, 0x1E29}, {0x68, 0x32E, 0x1E2B}, {0x68, 0x331, 0x1E96}, {0x69, 0x300, 0xEC},
    {0x69, 0x301, 0xED}, {0x69, 0x302, 0xEE}, {0x69, 0x303, 0x129}, {0x69, 0x304, 0x12B},
    {0x69, 0x306, 0x12D}, {0x69, 0x308, 0xEF}, {0x69, 0x309, 0x1EC9}, {0x69, 0x30C, 0x1D0},
    {0x69, 0x30F, 0x209}, {0x69, 0x311, 0x20B}, {0x69, 0x323, 0x1ECB}, {0x69, 0x328, 0x12F},
    {0x69, 0x330, 0x1E2D}, {0x6A, 0x302, 0x135}, {0x6A, 0x30C, 0x1F0}, {0x6B, 0x301, 0x1E31},
    {0x6B, 0x30C, 0x1E9}, {0x6B, 0x323, 0x1E33}, {0x6B, 0x327, 0x137}, {0x6B, 0x331, 0x1E35},
    {0x6C, 0x301, 0x13A}, {0x6C, 0x30C, 0x13E}, {0x6C, 0x323, 0x1E37}, {0x6C, 0x327, 0x13C},
    {0x6C, 0x32D, 0x1E3D}, {0x6C, 0x331, 0x1E3B}, {0x6D, 0x301, 0x1E3F}, {0x6D, 0x307, 0x1E41},
    {0x6D, 0x323, 0x1E43}, {0x6E, 0x300, 0x1F9}, {0x6E, 0x301, 0x144}, {0x6E, 0x303, 0xF1},
    {0x6E, 0x307, 0x1E45}, {0x6E, 0x30C, 0x148}, {0x6E, 0x323, 0x1E47}, {0x6E, 0x327, 0x146},
    {0x6E, 0x32D, 0x1E4B}, {0x6E, 0x331, 0x1E49}, {0x6F, 0x300, 0xF2}, {0x6F, 0x301, 0xF3},
    {0x6F, 0x302, 0xF4}, {0x6F, 0x303, 0xF5}, {0x6F, 0x304, 0x14D}, {0x6F, 0x306, 0x14F},
    {0x6F, 0x307, 0x22F}, {0x6F, 0x308, 0xF6}, {0x6F, 0x309, 0x1ECF}, {0x6F, 0x30B, 0x151},
    {0x6F, 0x30C, 0x1D2}, {0x6F, 0x30F, 0x20D}, {0x6F, 0x311, 0x20F}, {0x6F, 0x31B, 0x1A1},
    {0x6F, 0x323, 0x1ECD}, {0x6F, 0x328, 0x1EB}, {0x70, 0x301, 0x1E55}, {0x70, 0x307, 0x1E57},
    {0x72, 0x301, 0x155}, {0x72, 0x307, 0x1E59}, {0x72, 0x30C, 0x159}, {0x72, 0x30F, 0x211},
    {0x72, 0x311, 0x213}, {0x72, 0x323, 0x1E5B}, {0x72, 0x327, 0x157}, {0x72, 0x331, 0x1E5F},
    {0x73, 0x301, 0x15B}, {0x73, 0x302, 0x15D}, {0x73, 0x307, 0x1E61}, {0x73, 0x30C, 0x161},
    {0x73, 0x323, 0x1E63}, {0x73, 0x326, 0x219}, {0x73, 0x327, 0x15F}, {0x74, 0x307, 0x1E6B},
    {0x74, 0x308, 0x1E97}, {0x74, 0x30C, 0x165}, {0x74, 0x323, 0x1E6D}, {0x74, 0x326, 0x21B},
    {0x74, 0x327, 0x163}, {0x74, 0x32D, 0x1E71}, {0x74, 0x331, 0x1E6F}, {0x75, 0x300, 0xF9},
    {0x75, 0x301, 0xFA}, {0x75, 0x302, 0xFB}, {0x75, 0x303, 0x169}, {0x75, 0x304, 0x16B},
    {0x75, 0x306, 0x16D}, {0x75, 0x308, 0xFC}, {0x75, 0x309, 0x1EE7}, {0x75, 0x30A, 0x16F},
    {0x75, 0x30B, 0x171}, {0x75, 0x30C, 0x1D4}, {0x75, 0x30F, 0x215}, {0x75, 0x311, 0x217},
    {0x75, 0x31B, 0x1B0}, {0x75, 0x323, 0x1EE5}, {0x75, 0x324, 0x1E73}, {0x75, 0x328, 0x173},
    {0x75, 0x32D, 0x1E77}, {0x75, 0x330, 0x1E75}, {0x76, 0x303, 0x1E7D}, {0x76, 0x323, 0x1E7F},
    {0x77, 0x300, 0x1E81}, {0x77, 0x301, 0x1E83}, {0x77, 0x302, 0x175}, {0x77, 0x307, 0x1E87},
    {0x77, 0x308, 0x1E85}, {0x77, 0x30A, 0x1E98}, {0x77, 0x323, 0x1E89}, {0x78, 0x307, 0x1E8B},
    {0x78, 0x308, 0x1E8D}, {0x79, 0x300, 0x1EF3}, {0x79, 0x301, 0xFD}, {0x79, 0x302, 0x177},
    {0x79, 0x303, 0x1EF9}, {0x79, 0x304, 0x233}, {0x79, 0x307, 0x1E8F}, {0x79, 0x308, 0xFF},
    {0x79, 0x309, 0x1EF7}, {0x79, 0x30A, 0x1E99}, {0x79, 0x323, 0x1EF5}, {0x7A, 0x301, 0x17A},
    {0x7A, 0x302, 0x1E91}, {0x7A, 0x307, 0x17C}, {0x7A, 0x30C, 0x17E}, {0x7A, 0x323, 0x1E93},
    {0x7A, 0x331, 0x1E95}, {0xA8, 0x300, 0x1FED}, {0xA8, 0x301, 0x385}, {0xA8, 0x342, 0x1FC1},
    {0xC2, 0x300, 0x1EA6}, {0xC2, 0x301, 0x1EA4}, {0xC2, 0x303, 0x1EAA}, {0xC2, 0x309, 0x1EA8},
    {0xC4, 0x304, 0x1DE}, {0xC5, 0x301, 0x1FA}, {0xC6, 0x301, 0x1FC}, {0xC6, 0x304, 0x1E2},
    {0xC7, 0x301, 0x1E08}, {0xCA, 0x300, 0x1EC0}, {0xCA, 0x301, 0x1EBE}, {0xCA, 0x303, 0x1EC4},
    {0xCA, 0x309, 0x1EC2}, {0xCF, 0x301, 0x1E2E}, {0xD4, 0x300, 0x1ED2}, {0xD4, 0x301, 0x1ED0},
    {0xD4, 0x303, 0x1ED6}, {0xD4, 0x309, 0x1ED4}, {0xD5, 0x301, 0x1E4C}, {0xD5, 0x304, 0x22C},
    {0xD5, 0x308, 0x1E4E}, {0xD6, 0x304, 0x22A}, {0xD8, 0x301, 0x1FE}, {0xDC, 0x300, 0x1DB},
    {0xDC, 0x301, 0x1D7}, {0xDC, 0x304, 0x1D5}, {0xDC, 0x30C, 0x1D9}, {0xE2, 0x300, 0x1EA7},
    {0xE2, 0x301, 0x1EA5}, {0xE2, 0x303, 0x1EAB}, {0xE2, 0x309, 0x1EA9}, {0xE4, 0x304, 0x1DF},
    {0xE5, 0x301, 0x1FB}, {0xE6, 0x301, 0x1FD}, {0xE6, 0x304, 0x1E3}, {0xE7, 0x301, 0x1E09},
    {0xEA, 0x300, 0x1EC1}, {0xEA, 0x301, 0x1EBF}, {0xEA, 0x303, 0x1EC5}, {0xEA, 0x309, 0x1EC3},
    {0xEF, 0x301, 0x1E2F}, {0xF4, 0x300, 0x1ED3}, {0xF4, 0x301, 0x1ED1}, {0xF4, 0x303, 0x1ED7},
    {0xF4, 0x309, 0x1ED5}, {0xF5, 0x301, 0x1E4D}, {0xF5, 0x304, 0x22D}, {0xF5, 0x308, 0x1E4F},
    {0xF6, 0x304, 0x22B}, {0xF8, 0x301, 0x1FF}, {0xFC, 0x300, 0x1DC}, {0xFC, 0x301, 0x1D8},
    {0xFC, 0x304, 0x1D6}, {0xFC, 0x30C, 0x1DA}, {0x102, 0x300, 0x1EB0}, {0x102, 0x301, 0x1EAE},
    {0x102, 0x303, 0x1EB4}, {0x102, 0x309, 0x1EB2}, {0x103, 0x300, 0x1EB1}, {0x103, 0x301, 0x1EAF},
    {0x103, 0x303, 0x1EB5}, {0x103, 0x309, 0x1EB3}, {0x112, 0x300, 0x1E14}, {0x112, 0x301, 0x1E16},
    {0x113, 0x300, 0x1E15}, {0x113, 0x301, 0x1E17}, {0x14C, 0x300, 0x1E50}, {0x14C, 0x301, 0x1E52},
    {0x14D, 0x300, 0x1E51}, {0x14D, 0x301, 0x1E53}, {0x15A, 0x307, 0x1E64}, {0x15B, 0x307, 0x1E65},
    {0x160, 0x307, 0x1E66}, {0x161, 0x307, 0x1E67}, {0x168, 0x301, 0x1E78}, {0x169, 0x301, 0x1E79},
    {0x16A, 0x308, 0x1E7A}, {0x16B, 0x308, 0x1E7B}, {0x17F, 0x307, 0x1E9B}, {0x1A0, 0x300, 0x1EDC},
    {0x1A0, 0x301, 0x1EDA}, {0x1A0, 0x303, 0x1EE0}, {0x1A0, 0x309, 0x1EDE}, {0x1A0, 0x323, 0x1EE2},
    {0x1A1, 0x300, 0x1EDD}, {0x1A1, 0x301, 0x1EDB}, {0x1A1, 0x303, 0x1EE1}, {0x1A1, 0x309, 0x1EDF},
    {0x1A1, 0x323, 0x1EE3}, {0x1AF, 0x300, 0x1EEA}, {0x1AF, 0x301, 0x1EE8}, {0x1AF, 0x303, 0x1EEE},
    {0x1AF, 0x309, 0x1EEC}, {0x1AF, 0x323, 0x1EF0}, {0x1B0, 0x300, 0x1EEB}, {0x1B0, 0x301, 0x1EE9},
    {0x1B0, 0x303, 0x1EEF}, {0x1B0, 0x309, 0x1EED}, {0x1B0, 0x323, 0x1EF1}, {0x1B7, 0x30C, 0x1EE},
    {0x1EA, 0x304, 0x1EC}, {0x1EB, 0x304, 0x1ED}, {0x226, 0x304, 0x1E0}, {0x227, 0x304, 0x1E1},
    {0x228, 0x306, 0x1E1C}, {0x229, 0x306, 0x1E1D}, {0x22E, 0x304, 0x230}, {0x22F, 0x304, 0x231},
    {0x292, 0x30C, 0x1EF}, {0x391, 0x300, 0x1FBA}, {0x391, 0x301, 0x386}, {0x391, 0x304, 0x1FB9},
    {0x391, 0x306, 0x1FB8}, {0x391, 0x313, 0x1F08}, {0x391, 0x314, 0x1F09}, {0x391, 0x345, 0x1FBC},
    {0x395, 0x300, 0x1FC8}, {0x395, 0x301, 0x388}, {0x395, 0x313, 0x1F18}, {0x395, 0x314, 0x1F19},
    {0x397, 0x300, 0x1FCA}, {0x397, 0x301, 0x389}, {0x397, 0x313, 0x1F28}, {0x397, 0x314, 0x1F29},
    {0x397, 0x345, 0x1FCC}, {0x399, 0x300, 0x1FDA}, {0x399, 0x301, 0x38A}, {0x399, 0x304, 0x1FD9},
    {0x399, 0x306, 0x1FD8}, {0x399, 0x308, 0x3AA}, {0x399, 0x313, 0x1F38}, {0x399, 0x314, 0x1F39},
    {0x39F, 0x300, 0x1FF8}, {0x39F, 0x301, 0x38C}, {0x39F, 0x313, 0x1F48}, {0x39F, 0x314, 0x1F49},
    {0x3A1, 0x314, 0x1FEC}, {0x3A5, 0x300, 0x1FEA}, {0x3A5, 0x301, 0x38E}, {0x3A5, 0x304, 0x1FE9},
    {0x3A5, 0x306, 0x1FE8}, {0x3A5, 0x308, 0x3AB}, {0x3A5, 0x314, 0x1F59}, {0x3A9, 0x300, 0x1FFA},
    {0x3A9, 0x301, 0x38F}, {0x3A9, 0x313, 0x1F68}, {0x3A9, 0x314, 0x1F69}, {0x3A9, 0x345, 0x1FFC},
    {0x3AC, 0x345, 0x1FB4}, {0x3AE, 0x345, 0x1FC4}, {0x3B1, 0x300, 0x1F70}, {0x3B1, 0x301, 0x3AC},
    {0x3B1, 0x304, 0x1FB1}, {0x3B1, 0x306, 0x1FB0}, {0x3B1, 0x313, 0x1F00}, {0x3B1, 0x314, 0x1F01},
    {0x3B1, 0x342, 0x1FB6}, {0x3B1, 0x345, 0x1FB3}, {0x3B5, 0x300, 0x1F72}, {0x3B5, 0x301, 0x3AD},
    {0x3B5, 0x313, 0x1F10}, {0x3B5, 0x314, 0x1F11}, {0x3B7, 0x300, 0x1F74}, {0x3B7, 0x301, 0x3AE},
    {0x3B7, 0x313, 0x1F20}, {0x3B7, 0x314, 0x1F21}, {0x3B7, 0x342, 0x1FC6}, {0x3B7, 0x345, 0x1FC3},
    {0x3B9, 0x300, 0x1F76}, {0x3B9, 0x301, 0x3AF}, {0x3B9, 0x304, 0x1FD1}, {0x3B9, 0x306, 0x1FD0},
    {0x3B9, 0x308, 0x3CA}, {0x3B9, 0x313, 0x1F30}, {0x3B9, 0x314, 0x1F31}, {0x3B9, 0x342, 0x1FD6},
    {0x3BF, 0x300, 0x1F78}, {0x3BF, 0x301, 0x3CC}, {0x3BF, 0x313, 0x1F40}, {0x3BF, 0x314, 0x1F41},
    {0x3C1, 0x313, 0x1FE4}, {0x3C1, 0x314, 0x1FE5}, {0x3C5, 0x300, 0x1F7A}, {0x3C5, 0x301, 0x3CD},
    {0x3C5, 0x304, 0x1FE1}, {0x3C5, 0x306, 0x1FE0}, {0x3C5, 0x308, 0x3CB}, {0x3C5, 0x313, 0x1F50},
    {0x3C5, 0x314, 0x1F51}, {0x3C5, 0x342, 0x1FE6}, {0x3C9, 0x300, 0x1F7C}, {0x3C9, 0x301, 0x3CE},
    {0x3C9, 0x313, 0x1F60}, {0x3C9, 0x314, 0x1F61}, {0x3C9, 0x342, 0x1FF6}, {0x3C9, 0x345, 0x1FF3},
    {0x3CA, 0x300, 0x1FD2}, {0x3CA, 0x301, 0x390}, {0x3CA, 0x342, 0x1FD7}, {0x3CB, 0x300, 0x1FE2},
    {0x3CB, 0x301, 0x3B0}, {0x3CB, 0x342, 0x1FE7}, {0x3CE, 0x345, 0x1FF4}, {0x3D2, 0x301, 0x3D3},
    {0x3D2, 0x308, 0x3D4}, {0x406, 0x308, 0x407}, {0x410, 0x306, 0x4D0}, {0x410, 0x308, 0x4D2},
    {0x413, 0x301, 0x403}, {0x415, 0x300, 0x400}, {0x415, 0x306, 0x4D6}, {0x415, 0x308, 0x401},
    {0x416, 0x306, 0x4C1}, {0x416, 0x308, 0x4DC}, {0x417, 0x308, 0x4DE}, {0x418, 0x300, 0x40D},
    {0x418, 0x304, 0x4E2}, {0x418, 0x306, 0x419}, {0x418, 0x308, 0x4E4}, {0x41A, 0x301, 0x40C},
    {0x41E, 0x308, 0x4E6}, {0x423, 0x304, 0x4EE}, {0x423, 0x306, 0x40E}, {0x423, 0x308, 0x4F0},
    {0x423, 0x30B, 0x4F2}, {0x427, 0x308, 0x4F4}, {0x42B, 0x308, 0x4F8}, {0x42D, 0x308, 0x4EC},
    {0x430, 0x306, 0x4D1}, {0x430, 0x308, 0x4D3}, {0x433, 0x301, 0x453}, {0x435, 0x300, 0x450},
    {0x435, 0x306, 0x4D7}, {0x435, 0x308, 0x451}, {0x436, 0x306, 0x4C2}, {0x436, 0x308, 0x4DD},
    {0x437, 0x308, 0x4DF}, {0x438, 0x300, 0x45D}, {0x438, 0x304, 0x4E3}, {0x438, 0x306, 0x439},
    {0x438, 0x308, 0x4E5}, {0x43A, 0x301, 0x45C}, {0x43E, 0x308, 0x4E7}, {0x443, 0x304, 0x4EF},
    {0x443, 0x306, 0x45E}, {0x443, 0x308, 0x4F1}, {0x443, 0x30B, 0x4F3}, {0x447, 0x308, 0x4F5},
    {0x44B, 0x308, 0x4F9}, {0x44D, 0x308, 0x4ED}, {0x456, 0x308, 0x457}, {0x474, 0x30F, 0x476},
    {0x475, 0x30F, 0x477}, {0x4D8, 0x308, 0x4DA}, {0x4D9, 0x308, 0x4DB}, {0x4E8, 0x308, 0x4EA},
    {0x4E9, 0x308, 0x4EB}, {0x627, 0x653, 0x622}, {0x627, 0x654, 0x623}, {0x627, 0x655, 0x625},
    {0x648, 0x654, 0x624}, {0x64A, 0x654, 0x626}, {0x6C1, 0x654, 0x6C2}, {0x6D2, 0x654, 0x6D3},
    {0x6D5, 0x654, 0x6C0}, {0x928, 0x93C, 0x929}, {0x930, 0x93C, 0x931}, {0x933, 0x93C, 0x934},
    {0x9C7, 0x9BE, 0x9CB}, {0x9C7, 0x9D7, 0x9CC}, {0xB47, 0xB3E, 0xB4B}, {0xB47, 0xB56, 0xB48},
    {0xB47, 0xB57, 0xB4C}, {0xB92, 0xBD7, 0xB94}, {0xBC6, 0xBBE, 0xBCA}, {0xBC6, 0xBD7, 0xBCC},
    {0xBC7, 0xBBE, 0xBCB}, {0xC46, 0xC56, 0xC48}, {0xCBF, 0xCD5, 0xCC0}, {0xCC6, 0xCC2, 0xCCA},
    {0xCC6, 0xCD5, 0xCC7}, {0xCC6, 0xCD6, 0xCC8}, {0xCCA, 0xCD5, 0xCCB}, {0xD46, 0xD3E, 0xD4A},
    {0xD46, 0xD57, 0xD4C}, {0xD47, 0xD3E, 0xD4B}, {0xDD9, 0xDCA, 0xDDA}, {0xDD9, 0xDCF, 0xDDC},
    {0xDD9, 0xDDF, 0xDDE}, {0xDDC, 0xDCA, 0xDDD}, {0x1025, 0x102E, 0x1026}, {0x1B05, 0x1B35, 0x1B06},
    {0x1B07, 0x1B35, 0x1B08}, {0x1B09, 0x1B35, 0x1B0A}, {0x1B0B, 0x1B35, 0x1B0C}, {0x1B0D, 0x1B35, 0x1B0E},
    {0x1B11, 0x1B35, 0x1B12}, {0x1B3A, 0x1B35, 0x1B3B}, {0x1B3C, 0x1B35, 0x1B3D}, {0x1B3E, 0x1B35, 0x1B40},
    {0x1B3F, 0x1B35, 0x1B41}, {0x1B42, 0x1B35, 0x1B43}, {0x1E36, 0x304, 0x1E38}, {0x1E37, 0x304, 0x1E39},
    {0x1E5A, 0x304, 0x1E5C}, {0x1E5B, 0x304, 0x1E5D}, {0x1E62, 0x307, 0x1E68}, {0x1E63, 0x307, 0x1E69},
    {0x1EA0, 0x302, 0x1EAC}, {0x1EA0, 0x306, 0x1EB6}, {0x1EA1, 0x302, 0x1EAD}, {0x1EA1, 0x306, 0x1EB7},
    {0x1EB8, 0x302, 0x1EC6}, {0x1EB9, 0x302, 0x1EC7}, {0x1ECC, 0x302, 0x1ED8}, {0x1ECD, 0x302, 0x1ED9},
    {0x1F00, 0x300, 0x1F02}, {0x1F00, 0x301, 0x1F04}, {0x1F00, 0x342, 0x1F06}, {0x1F00, 0x345, 0x1F80},
    {0x1F01, 0x300, 0x1F03}, {0x1F01, 0x301, 0x1F05}, {0x1F01, 0x342, 0x1F07}, {0x1F01, 0x345, 0x1F81},
    {0x1F02, 0x345, 0x1F82}, {0x1F03, 0x345, 0x1F83}, {0x1F04, 0x345, 0x1F84}, {0x1F05, 0x345, 0x1F85},
    {0x1F06, 0x345, 0x1F86}, {0x1F07, 0x345, 0x1F87}, {0x1F08, 0x300, 0x1F0A}, {0x1F08, 0x301, 0x1F0C},
    {0x1F08, 0x342, 0x1F0E}, {0x1F08, 0x345, 0x1F88}, {0x1F09, 0x300, 0x1F0B}, {0x1F09, 0x301, 0x1F0D},
    {0x1F09, 0x342, 0x1F0F}, {0x1F09, 0x345, 0x1F89}, {0x1F0A, 0x345, 0x1F8A}, {0x1F0B, 0x345, 0x1F8B},
    {0x1F0C, 0x345, 0x1F8C}, {0x1F0D, 0x345, 0x1F8D}, {0x1F0E, 0x345, 0x1F8E}, {0x1F0F, 0x345, 0x1F8F},
    {0x1F10, 0x300, 0x1F12}, {0x1F10, 0x301, 0x1F14}, {0x1F11, 0x300, 0x1F13}, {0x1F11, 0x301, 0x1F15},
    {0x1F18, 0x300, 0x1F1A}, {0x1F18, 0x301, 0x1F1C}, {0x1F19, 0x300, 0x1F1B}, {0x1F19, 0x301, 0x1F1D},
    {0x1F20, 0x300, 0x1F22}, {0x1F20, 0x301, 0x1F24}, {0x1F20, 0x342, 0x1F26}, {0x1F20, 0x345, 0x1F90},
    {0x1F21, 0x300, 0x1F23}, {0x1F21, 0x301, 0x1F25}, {0x1F21, 0x342, 0x1F27}, {0x1F21, 0x345, 0x1F91},
    {0x1F22, 0x345, 0x1F92}, {0x1F23, 0x345, 0x1F93}, {0x1F24, 0x345, 0x1F94}, {0x1F25, 0x345, 0x1F95},
    {0x1F26, 0x345, 0x1F96}, {0x1F27, 0x345, 0x1F97}, {0x1F28, 0x300, 0x1F2A}, {0x1F28, 0x301, 0x1F2C},
    {0x1F28, 0x342, 0x1F2E}, {0x1F28, 0x345, 0x1F98}, {0x1F29, 0x300, 0x1F2B}, {0x1F29, 0x301, 0x1F2D},
    {0x1F29, 0x342, 0x1F2F}, {0x1F29, 0x345, 0x1F99}, {0x1F2A, 0x345, 0x1F9A}, {0x1F2B, 0x345, 0x1F9B},
    {0x1F2C, 0x345, 0x1F9C}, {0x1F2D, 0x345, 0x1F9D}, {0x1F2E, 0x345, 0x1F9E}, {0x1F2F, 0x345, 0x1F9F},
    {0x1F30, 0x300, 0x1F32}, {0x1F30, 0x301, 0x1F34}, {0x1F30, 0x342, 0x1F36}, {0x1F31, 0x300, 0x1F33},
    {0x1F31, 0x301, 0x1F35}, {0x1F31, 0x342, 0x1F37}, {0x1F38, 0x300, 0x1F3A}, {0x1F38, 0x301, 0x1F3C},
    {0x1F38, 0x342, 0x1F3E}, {0x1F39, 0x300, 0x1F3B}, {0x1F39, 0x301, 0x1F3D}, {0x1F39, 0x342, 0x1F3F},
    {0x1F40, 0x300, 0x1F42}, {0x1F40, 0x301, 0x1F44}, {0x1F41, 0x300, 0x1F43}, {0x1F41, 0x301, 0x1F45},
    {0x1F48, 0x300, 0x1F4A}, {0x1F48, 0x301, 0x1F4C}, {0x1F49, 0x300, 0x1F4B}, {0x1F49, 0x301, 0x1F4D},
    {0x1F50, 0x300, 0x1F52}, {0x1F50, 0x301, 0x1F54}, {0x1F50, 0x342, 0x1F56}, {0x1F51, 0x300, 0x1F53},
    {0x1F51, 0x301, 0x1F55}, {0x1F51, 0x342, 0x1F57}, {0x1F59, 0x300, 0x1F5B}, {0x1F59, 0x301, 0x1F5D},
    {0x1F59, 0x342, 0x1F5F}, {0x1F60, 0x300, 0x1F62}, {0x1F60, 0x301, 0x1F64}, {0x1F60, 0x342, 0x1F66},
    {0x1F60, 0x345, 0x1FA0}, {0x1F61, 0x300, 0x1F63}, {0x1F61, 0x301, 0x1F65}, {0x1F61, 0x342, 0x1F67},
    {0x1F61, 0x345, 0x1FA1}, {0x1F62, 0x345, 0x1FA2}, {0x1F63, 0x345, 0x1FA3}, {0x1F64, 0x345, 0x1FA4},
    {0x1F65, 0x345, 0x1FA5}, {0x1F66, 0x345, 0x1FA6}, {0x1F67, 0x345, 0x1FA7}, {0x1F68, 0x300, 0x1F6A},
    {0x1F68, 0x301, 0x1F6C}, {0x1F68, 0x342, 0x1F6E}, {0x1F68, 0x345, 0x1FA8}, {0x1F69, 0x300, 0x1F6B},
    {0x1F69, 0x301, 0x1F6D}, {0x1F69, 0x342, 0x1F6F}, {0x1F69, 0x345, 0x1FA9}, {0x1F6A, 0x345, 0x1FAA},
    {0x1F6B, 0x345, 0x1FAB}, {0x1F6C, 0x345, 0x1FAC}, {0x1F6D, 0x345, 0x1FAD}, {0x1F6E, 0x345, 0x1FAE},
    {0x1F6F, 0x345, 0x1FAF}, {0x1F70, 0x345, 0x1FB2}, {0x1F74, 0x345, 0x1FC2}, {0x1F7C, 0x345, 0x1FF2},
    {0x1FB6, 0x345, 0x1FB7}, {0x1FBF, 0x300, 0x1FCD}, {0x1FBF, 0x301, 0x1FCE}, {0x1FBF, 0x342, 0x1FCF},
    {0x1FC6, 0x345, 0x1FC7}, {0x1FF6, 0x345, 0x1FF7}, {0x1FFE, 0x300, 0x1FDD}, {0x1FFE, 0x301, 0x1FDE},
    {0x1FFE, 0x342, 0x1FDF}, {0x2190, 0x338, 0x219A}, {0x2192, 0x338, 0x219B}, {0x2194, 0x338, 0x21AE},
    {0x21D0, 0x338, 0x21CD}, {0x21D2, 0x338, 0x21CF}, {0x21D4, 0x338, 0x21CE}, {0x2203, 0x338, 0x2204},
    {0x2208, 0x338, 0x2209}, {0x220B, 0x338, 0x220C}, {0x2223, 0x338, 0x2224}, {0x2225, 0x338, 0x2226},
    {0x223C, 0x338, 0x2241}, {0x2243, 0x338, 0x2244}, {0x2245, 0x338, 0x2247}, {0x2248, 0x338, 0x2249},
    {0x224D, 0x338, 0x226D}, {0x2261, 0x338, 0x2262}, {0x2264, 0x338, 0x2270}, {0x2265, 0x338, 0x2271},
    {0x2272, 0x338, 0x2274}, {0x2273, 0x338, 0x2275}, {0x2276, 0x338, 0x2278}, {0x2277, 0x338, 0x2279},
    {0x227A, 0x338, 0x2280}, {0x227B, 0x338, 0x2281}, {0x227C, 0x338, 0x22E0}, {0x227D, 0x338, 0x22E1},
    {0x2282, 0x338, 0x2284}, {0x2283, 0x338, 0x2285}, {0x2286, 0x338, 0x2288}, {0x2287, 0x338, 0x2289},
    {0x2291, 0x338, 0x22E2}, {0x2292, 0x338, 0x22E3}, {0x22A2, 0x338, 0x22AC}, {0x22A8, 0x338, 0x22AD},
    {0x22A9, 0x338, 0x22AE}, {0x22AB, 0x338, 0x22AF}, {0x22B2, 0x338, 0x22EA}, {0x22B3, 0x338, 0x22EB},
    {0x22B4, 0x338, 0x22EC}, {0x22B5, 0x338, 0x22ED}, {0x3046, 0x3099, 0x3094}, {0x304B, 0x3099, 0x304C},
    {0x304D, 0x3099, 0x304E}, {0x304F, 0x3099, 0x3050}, {0x3051, 0x3099, 0x3052}, {0x3053, 0x3099, 0x3054},
    {0x3055, 0x3099, 0x3056}, {0x3057, 0x3099, 0x3058}, {0x3059, 0x3099, 0x305A}, {0x305B, 0x3099, 0x305C},
    {0x305D, 0x3099, 0x305E}, {0x305F, 0x3099, 0x3060}, {0x3061, 0x3099, 0x3062}, {0x3064, 0x3099, 0x3065},
    {0x3066, 0x3099, 0x3067}, {0x3068, 0x3099, 0x3069}, {0x306F, 0x3099, 0x3070}, {0x306F, 0x309A, 0x3071},
    {0x3072, 0x3099, 0x3073}, {0x3072, 0x309A, 0x3074}, {0x3075, 0x3099, 0x3076}, {0x3075, 0x309A, 0x3077},
    {0x3078, 0x3099, 0x3079}, {0x3078, 0x309A, 0x307A}, {0x307B, 0x3099, 0x307C}, {0x307B, 0x309A, 0x307D},
    {0x309D, 0x3099, 0x309E}, {0x30A6, 0x3099, 0x30F4}, {0x30AB, 0x3099, 0x30AC}, {0x30AD, 0x3099, 0x30AE},
    {0x30AF, 0x3099, 0x30B0}, {0x30B1, 0x3099, 0x30B2}, {0x30B3, 0x3099, 0x30B4}, {0x30B5, 0x3099, 0x30B6},
    {0x30B7, 0x3099, 0x30B8}, {0x30B9, 0x3099, 0x30BA}, {0x30BB, 0x3099, 0x30BC}, {0x30BD, 0x3099, 0x30BE},
    {0x30BF, 0x3099, 0x30C0}, {0x30C1, 0x3099, 0x30C2}, {0x30C4, 0x3099, 0x30C5}, {0x30C6, 0x3099, 0x30C7},
    {0x30C8, 0x3099, 0x30C9}, {0x30CF, 0x3099, 0x30D0}, {0x30CF, 0x309A, 0x30D1}, {0x30D2, 0x3099, 0x30D3},
    {0x30D2, 0x309A, 0x30D4}, {0x30D5, 0x3099, 0x30D6}, {0x30D5, 0x309A, 0x30D7}, {0x30D8, 0x3099, 0x30D9},
    {0x30D8, 0x309A, 0x30DA}, {0x30DB, 0x3099, 0x30DC}, {0x30DB, 0x309A, 0x30DD}, {0x30EF, 0x3099, 0x30F7},
    {0x30F0, 0x3099, 0x30F8}, {0x30F1, 0x3099, 0x30F9}, {0x30F2, 0x3099, 0x30FA}, {0x30FD, 0x3099, 0x30FE},
    {0x11099, 0x110BA, 0x1109A}, {0x1109B, 0x110BA, 0x1109C}, {0x110A5, 0x110BA, 0x110AB}, {0x11131, 0x11127, 0x1112E},
    {0x11132, 0x11127, 0x1112F}, {0x11347, 0x1133E, 0x1134B}, {0x11347, 0x11357, 0x1134C}, {0x114B9, 0x114B0, 0x114BC},
    {0x114B9, 0x114BA, 0x114BB}, {0x114B9, 0x114BD, 0x114BE}, {0x115B8, 0x115AF, 0x115BA}, {0x115B9, 0x115AF, 0x115BB},
};

// NFC quick check: characters whose NFC_Quick_Check is No or Maybe: 111 ranges.
inline constexpr CodeRange kNfcQuickCheckRanges[] = {
    {0x300, 0x304}, {0x306, 0x30C}, {0x30F, 0x30F}, {0x311, 0x311}, {0x313, 0x314},
    {0x31B, 0x31B}, {0x323, 0x328}, {0x32D, 0x32E}, {0x330, 0x331}, {0x338, 0x338},
    {0x340, 0x345}, {0x374, 0x374}, {0x37E, 0x37E}, {0x387, 0x387}, {0x653, 0x655},
    {0x93C, 0x93C}, {0x958, 0x95F}, {0x9BE, 0x9BE}, {0x9D7, 0x9D7}, {0x9DC, 0x9DD},
    {0x9DF, 0x9DF}, {0xA33, 0xA33}, {0xA36, 0xA36}, {0xA59, 0xA5B}, {0xA5E, 0xA5E},
    {0xB3E, 0xB3E}, {0xB56, 0xB57}, {0xB5C, 0xB5D}, {0xBBE, 0xBBE}, {0xBD7, 0xBD7},
    {0xC56, 0xC56}, {0xCC2, 0xCC2}, {0xCD5, 0xCD6}, {0xD3E, 0xD3E}, {0xD57, 0xD57},
    {0xDCA, 0xDCA}, {0xDCF, 0xDCF}, {0xDDF, 0xDDF}, {0xF43, 0xF43}, {0xF4D, 0xF4D},
    {0xF52, 0xF52}, {0xF57, 0xF57}, {0xF5C, 0xF5C}, {0xF69, 0xF69}, {0xF73, 0xF73},
    {0xF75, 0xF76}, {0xF78, 0xF78}, {0xF81, 0xF81}, {0xF93, 0xF93}, {0xF9D, 0xF9D},
    {0xFA2, 0xFA2}, {0xFA7, 0xFA7}, {0xFAC, 0xFAC}, {0xFB9, 0xFB9}, {0x102E, 0x102E},
    {0x1161, 0x1175}, {0x11A8, 0x11C2}, {0x1B35, 0x1B35}, {0x1F71, 0x1F71}, {0x1F73, 0x1F73},
    {0x1F75, 0x1F75}, {0x1F77, 0x1F77}, {0x1F79, 0x1F79}, {0x1F7B, 0x1F7B}, {0x1F7D, 0x1F7D},
    {0x1FBB, 0x1FBB}, {0x1FBE, 0x1FBE}, {0x1FC9, 0x1FC9}, {0x1FCB, 0x1FCB}, {0x1FD3, 0x1FD3},
    {0x1FDB, 0x1FDB}, {0x1FE3, 0x1FE3}, {0x1FEB, 0x1FEB}, {0x1FEE, 0x1FEF}, {0x1FF9, 0x1FF9},
    {0x1FFB, 0x1FFB}, {0x1FFD, 0x1FFD}, {0x2000, 0x2001}, {0x2126, 0x2126}, {0x212A, 0x212B},
    {0x2329, 0x232A}, {0x2ADC, 0x2ADC}, {0x3099, 0x309A}, {0xF900, 0xFA0D}, {0xFA10, 0xFA10},
    {0xFA12, 0xFA12}, {0xFA15, 0xFA1E}, {0xFA20, 0xFA20}, {0xFA22, 0xFA22}, {0xFA25, 0xFA26},
    {0xFA2A, 0xFA6D}, {0xFA70, 0xFAD9}, {0xFB1D, 0xFB1D}, {0xFB1F, 0xFB1F}, {0xFB2A, 0xFB36},
    {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41}, {0xFB43, 0xFB44}, {0xFB46, 0xFB4E},
    {0x110BA, 0x110BA}, {0x11127, 0x11127}, {0x1133E, 0x1133E}, {0x11357, 0x11357}, {0x114B0, 0x114B0},
    {0x114BA, 0x114BA}, {0x114BD, 0x114BD}, {0x115AF, 0x115AF}, {0x1D15E, 0x1D164}, {0x1D1BB, 0x1D1C0},
    {0x2F800, 0x2FA1D},
};

// END GENERATED UNICODE TABLES

// The lookups the tokenizer section declares, by binary search in the tables above.
template <size_t N>
inline bool in_ranges(const CodeRange (&r)[N], uint32_t cp) {
    const CodeRange* it = std::upper_bound(r, r + N, cp, [](uint32_t c, const CodeRange& x) { return c < x.lo; });
    return it != r && cp <= (it - 1)->hi;
}

inline bool unicode_letter(uint32_t cp) { return in_ranges(kLetterRanges, cp); }
inline bool unicode_number(uint32_t cp) { return in_ranges(kNumberRanges, cp); }
inline bool unicode_space(uint32_t cp) { return in_ranges(kSpaceRanges, cp); }
inline bool unicode_nfc_maybe(uint32_t cp) { return in_ranges(kNfcQuickCheckRanges, cp); }

inline int combining_class(uint32_t cp) {
    if (cp < 0x300) return 0;
    const CombiningRange* r = kCombiningRanges;
    const size_t n = sizeof kCombiningRanges / sizeof kCombiningRanges[0];
    const CombiningRange* it =
        std::upper_bound(r, r + n, cp, [](uint32_t c, const CombiningRange& x) { return c < x.lo; });
    return it != r && cp <= (it - 1)->hi ? (it - 1)->ccc : 0;
}

inline bool canonical_decomposition(uint32_t cp, std::vector<uint32_t>& out) {
    const Decomposition* d = kDecompositions;
    const size_t n = sizeof kDecompositions / sizeof kDecompositions[0];
    const Decomposition* it =
        std::lower_bound(d, d + n, cp, [](const Decomposition& x, uint32_t c) { return x.cp < c; });
    if (it == d + n || it->cp != cp) return false;
    out.insert(out.end(), kDecompositionData + it->offset, kDecompositionData + it->offset + it->len);
    return true;
}

inline uint32_t canonical_composite(uint32_t a, uint32_t b) {
    const Composition* c = kCompositions;
    const size_t n = sizeof kCompositions / sizeof kCompositions[0];
    const Composition* it = std::lower_bound(c, c + n, std::make_pair(a, b), [](const Composition& x, auto key) {
        return x.first != key.first ? x.first < key.first : x.second < key.second;
    });
    return it != c + n && it->first == a && it->second == b ? it->composite : 0;
}

}  // namespace qwen
