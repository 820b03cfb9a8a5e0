// Tokenizer throughput on one core: English, Chinese and source-code text, plus pathological inputs.
//   make bench-tokenizer    (or: build/tokenizer_bench build/qwen-tokenizer.bin [MB])
// The sample text is generated from small embedded word lists with a fixed seed (no files, no network):
// random word sequences repeat words like real text does, but not whole sentences.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <sstream>
#include <string>
#include <vector>

#include "../qwen.hpp"

// Word lists, space-separated.
static const char* kEnglish =
    "the of and to in a is that for it as was with be by on not he I this are or his from at which but have an "
    "had they you were their one all we can her has there been if more when will would who so no model language "
    "inference engine token weights attention memory kernel throughput latency Transformer GPU matrix vector "
    "however because although therefore experiment results significantly between information available "
    "development government international especially different don't it's we're they've I'll 2024 3.5 100 New "
    "York London Monday understanding question answer people world history science beautiful quickly";
static const char* kEnglishGlue[] = {" ", " ", " ", " ", " ", " ", ", ", ". ", "; ", ": ", "? ", "! ", "\n\n"};

static const char* kChinese =
    "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去"
    "行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从已知全"
    "模型语言推理引擎计算显存矩阵向量注意力量化训练数据结果实验性能速度内存服务器用户问题回答世界历史科学美丽";
static const char* kChineseGlue[] = {"", "", "", "", "", "", "", "，", "。", "、", "：", "“", "”", "\n"};

static const char* kCode[] = {
    "    for (int i = 0; i < n; i++) {\n",
    "        sum += a[i] * b[i];\n",
    "    }\n",
    "    return sum;\n",
    "}\n\n",
    "static float dot(const float* a, const float* b, int n) {\n",
    "    float sum = 0.0f;\n",
    "def forward(self, x):\n",
    "        h = self.norm(x)\n",
    "        return self.proj(h) + x\n",
    "    if (err != cudaSuccess) fail(\"cuda: %s\", cudaGetErrorString(err));\n",
    "#include <vector>\n",
    "import numpy as np\n",
    "    // rms norm: x / sqrt(mean(x^2) + eps) * w\n",
    "    const int tid = blockIdx.x * blockDim.x + threadIdx.x;\n",
    "    std::vector<int> ids = tok.encode(text);\n",
    "class Model:\n",
    "    x = torch.zeros((batch, dim), dtype=torch.bfloat16)\n",
    "        self.layers = []\n",
};

struct Rng {  // xorshift64: deterministic sample text
    uint64_t s = 88172645463325252ull;
    uint32_t next(uint32_t n) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        return uint32_t(s % n);
    }
};

template <size_t N>
static const char* pick(Rng& r, const char* (&a)[N]) {
    return a[r.next(N)];
}

static std::vector<std::string> split_words(const char* s) {
    std::vector<std::string> words;
    std::istringstream in(s);
    for (std::string w; in >> w;) words.push_back(w);
    return words;
}

static std::string english(size_t bytes) {
    Rng r;
    std::vector<std::string> words = split_words(kEnglish);
    std::string s;
    while (s.size() < bytes) (s += words[r.next(uint32_t(words.size()))]) += pick(r, kEnglishGlue);
    return s;
}

static std::string chinese(size_t bytes) {  // every character of kChinese is 3 bytes of UTF-8
    Rng r;
    size_t n_chars = strlen(kChinese) / 3;
    std::string s;
    while (s.size() < bytes) (s += std::string(kChinese + 3 * r.next(uint32_t(n_chars)), 3)) += pick(r, kChineseGlue);
    return s;
}

static std::string code(size_t bytes) {
    Rng r;
    std::string s;
    while (s.size() < bytes) s += pick(r, kCode);
    return s;
}

static std::string random_code_points(size_t bytes) {  // valid UTF-8, any scalar value
    Rng r;
    std::string s;
    while (s.size() < bytes) {
        uint32_t cp = r.next(0x110000);
        if (cp >= 0xD800 && cp < 0xE000) continue;
        qwen::utf8_append(s, cp);
    }
    return s;
}

// CPU time of this thread: the tokenizer runs on one core, and CPU time is not inflated when other
// processes share the machine (wall time is).
static double cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void run(const qwen::Tokenizer& tok, const char* name, const std::string& text, int repeats) {
    double best = 1e30;
    size_t n_ids = 0;
    for (int i = 0; i < repeats; i++) {
        double t0 = cpu_seconds();
        n_ids = tok.encode(text, true).size();
        best = std::min(best, cpu_seconds() - t0);
    }
    printf("%-22s %6.2f MB  %9zu tokens  %7.3f s CPU  %6.1f MB/s\n", name, text.size() / 1e6, n_ids, best,
           text.size() / 1e6 / best);
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s TOKENIZER.bin [MB per sample]\n", argv[0]);
        return 2;
    }
    size_t bytes = size_t((argc > 2 ? atof(argv[2]) : 4.0) * 1e6);
    try {
        qwen::Model m = qwen::load_tokenizer(argv[1]);
        double t0 = qwen::now_seconds();
        qwen::Tokenizer tok(m.vocab);
        printf("tokenizer: %d tokens, built in %.3f s\n", tok.n_tokens(), qwen::now_seconds() - t0);
        run(tok, "English", english(bytes), 3);
        run(tok, "Chinese", chinese(bytes), 3);
        run(tok, "code", code(bytes), 3);
        printf("pathological inputs (1 MB each):\n");
        run(tok, "\"a\" x 1M", std::string(1000000, 'a'), 1);
        std::string cjk;
        for (uint32_t i = 0; cjk.size() < 1000000; i++) qwen::utf8_append(cjk, 0x4E00 + (i * 7919) % 0x5000);
        run(tok, "CJK, no spaces", cjk, 1);
        run(tok, "random code points", random_code_points(1000000), 1);
        run(tok, "spaces x 1M", std::string(1000000, ' '), 1);
        run(
            tok, "decomposed accents",
            [] {
                std::string s;
                while (s.size() < 1000000) s += "e\xCC\x81";
                return s;
            }(),
            1);
    } catch (const qwen::Error& e) {
        fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}
