// ============================================================================
// Common: errors, bf16, the mapped file, timing
// ============================================================================
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <queue>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace qwen {

// Every failure in the library is a qwen::Error carrying one human-readable line.
// Front ends catch it: the CLI prints it and exits 1, the server answers 400.
struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The one fatal-error helper: printf-style message, thrown as qwen::Error.
[[noreturn]] inline void fail(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    throw Error(buf);
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

inline double now_seconds() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// A read-only memory map of a whole file; unmapped when destroyed.
struct MappedFile {
    std::string path;
    const uint8_t* data = nullptr;
    size_t size = 0;

    MappedFile() = default;
    explicit MappedFile(const std::string& p) : path(p) {
        int fd = ::open(p.c_str(), O_RDONLY);
        if (fd < 0) fail("%s: cannot open: %s", p.c_str(), strerror(errno));
        struct stat st;
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

}  // namespace qwen
