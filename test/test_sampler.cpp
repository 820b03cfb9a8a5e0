// Sampler: reproducibility, greedy, the filter sets against a brute-force reference, frequencies, penalties,
// parameter validation.
#include <doctest/doctest.h>

#include <cfloat>
#include <map>
#include <set>

#include "../qwen.hpp"

using namespace qwen;

namespace {

std::vector<float> random_logits(int n, uint64_t seed, float scale) {
    Rng r(seed);
    std::vector<float> l(static_cast<size_t>(n));
    for (float& x : l) x = scale * (r.uniform() + r.uniform() + r.uniform() - 1.5f);  // roughly bell-shaped
    return l;
}

// The kept set by the definitions, sorting the whole vocabulary: softmax(l / T) in double, then top-k (ties with
// the k-th kept), top-p over the renormalised top-k mass, min-p against the largest probability.
// (Not a model of efficiency: it sorts everything.)
std::set<int> reference_kept(const std::vector<float>& logits, const SamplingParams& sp) {
    int n = int(logits.size());
    double max = *std::max_element(logits.begin(), logits.end()), sum = 0;
    std::vector<std::pair<double, int>> p;  // (probability, id), most probable first
    for (int i = 0; i < n; i++) {
        p.push_back({std::exp((logits[size_t(i)] - max) / sp.temperature), i});
        sum += p.back().first;
    }
    for (auto& x : p) x.first /= sum;
    std::sort(p.begin(), p.end(), [](auto& a, auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    if (sp.top_k > 0 && sp.top_k < n) {
        double kth = p[size_t(sp.top_k - 1)].first;
        size_t m = 0;
        while (m < p.size() && p[m].first >= kth) m++;
        p.resize(m);
    }
    double total = 0;
    for (auto& x : p) total += x.first;
    size_t m = 0;
    for (double before = 0; m < p.size() && (m == 0 || before < sp.top_p * total); m++) before += p[m].first;
    if (sp.top_p < 1) p.resize(m);  // top_p = 1 is off (HF adds no warper for it)
    m = 1;
    while (m < p.size() && p[m].first >= sp.min_p * p[0].first) m++;
    p.resize(m);
    std::set<int> ids;
    for (auto& x : p) ids.insert(x.second);
    return ids;
}

}  // namespace

TEST_CASE("sampler: Rng is seeded and reproducible") {
    Rng a(42), b(42), c(43);
    bool differs = false;
    for (int i = 0; i < 100; i++) {
        uint32_t x = a.next_u32();
        CHECK(x == b.next_u32());
        differs |= x != c.next_u32();
    }
    CHECK(differs);
    Rng z(0);  // seed 0 must work too
    for (int i = 0; i < 10000; i++) {
        float u = z.uniform();
        REQUIRE(u >= 0.0f);
        REQUIRE(u < 1.0f);
    }
}

TEST_CASE("sampler: same seed, same tokens") {
    std::vector<float> logits = random_logits(1000, 7, 4.0f);
    SamplingParams sp;
    sp.temperature = 1.0f, sp.top_p = 0.95f, sp.top_k = 0, sp.seed = 1234;
    Sampler s1(sp), s2(sp);
    sp.seed = 1235;
    Sampler s3(sp);
    std::vector<int> ctx;
    int same3 = 0;
    for (int i = 0; i < 200; i++) {
        std::vector<float> l1 = logits, l2 = logits, l3 = logits;
        int t1 = s1.sample(l1.data(), 1000, ctx, 0), t2 = s2.sample(l2.data(), 1000, ctx, 0);
        CHECK(t1 == t2);
        same3 += t1 == s3.sample(l3.data(), 1000, ctx, 0);
    }
    CHECK(same3 < 200);
}

TEST_CASE("sampler: temperature 0 is argmax, lowest id on ties") {
    SamplingParams sp;
    sp.temperature = 0.0f;
    Sampler s(sp);
    std::vector<float> l = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f};
    CHECK(s.sample(l.data(), 5, {}, 0) == 1);
    std::vector<float> big = random_logits(151936, 3, 10.0f);
    int best = int(std::max_element(big.begin(), big.end()) - big.begin());
    CHECK(s.sample(big.data(), 151936, {}, 0) == best);
}

TEST_CASE("sampler: top-k / top-p / min-p keep exactly the reference set and draw only from it") {
    const int n = 2000;
    std::vector<float> logits = random_logits(n, 99, 8.0f);
    // A run of equal logits at the top, to exercise ties at the k-th token.
    for (int i = 0; i < 4; i++) logits[size_t(100 + i)] = 6.0f;
    int n_cases = 0;
    for (float temp : {0.5f, 1.0f, 2.0f})
        for (int top_k : {0, 1, 2, 5, 50, 5000})
            for (float top_p : {1.0f, 0.95f, 0.5f, 0.05f})
                for (float min_p : {0.0f, 0.05f, 0.5f}) {
                    SamplingParams sp;
                    sp.temperature = temp, sp.top_k = top_k, sp.top_p = top_p, sp.min_p = min_p;
                    sp.seed = uint64_t(n_cases++);
                    CAPTURE(temp);
                    CAPTURE(top_k);
                    CAPTURE(top_p);
                    CAPTURE(min_p);
                    Sampler s(sp);
                    std::set<int> want = reference_kept(logits, sp), got;
                    for (const Sampler::Candidate& c : s.keep(logits.data(), n)) got.insert(c.id);
                    REQUIRE(got == want);
                    for (int i = 0; i < 300; i++) {
                        std::vector<float> l = logits;
                        int id = s.sample(l.data(), n, {}, 0);
                        REQUIRE(want.count(id) == 1);
                    }
                }
}

TEST_CASE("sampler: top-p tie case and the at-least-one rule") {
    SamplingParams sp;
    sp.temperature = 1.0f, sp.top_k = 0;
    std::vector<float> l = {0.0f, 0.0f, 0.0f, 0.0f};  // p = 1/4 each
    sp.top_p = 0.5f;  // two tokens reach exactly 0.5
    Sampler a(sp);
    CHECK(a.keep(l.data(), 4).size() == 2);
    sp.top_p = 0.51f;
    Sampler b(sp);
    CHECK(b.keep(l.data(), 4).size() == 3);
    sp.top_p = 1e-6f;
    Sampler c(sp);
    CHECK(c.keep(l.data(), 4).size() == 1);
    CHECK(c.keep(l.data(), 4)[0].id == 0);
}

TEST_CASE("sampler: empirical frequencies match the probabilities") {
    std::vector<float> logits = {1.0f, 0.0f, 2.0f, -1.0f, 0.5f};
    SamplingParams sp;
    sp.temperature = 1.5f, sp.top_k = 0, sp.top_p = 1.0f, sp.seed = 5;
    Sampler s(sp);
    double z = 0;
    std::vector<double> p;
    for (float x : logits) z += std::exp(x / 1.5);
    for (float x : logits) p.push_back(std::exp(x / 1.5) / z);
    const int draws = 200000;
    std::vector<int> count(5);
    for (int i = 0; i < draws; i++) {
        std::vector<float> l = logits;
        count[size_t(s.sample(l.data(), 5, {}, 0))]++;
    }
    for (size_t i = 0; i < 5; i++) {
        CAPTURE(i);
        CHECK(std::abs(count[i] / double(draws) - p[i]) < 0.005);  // ~5 standard deviations
    }
    // With top-k 2 the two best tokens share the mass in proportion.
    sp.top_k = 2;
    Sampler k2(sp);
    std::map<int, int> c2;
    for (int i = 0; i < draws; i++) {
        std::vector<float> l = logits;
        c2[k2.sample(l.data(), 5, {}, 0)]++;
    }
    CHECK(c2.size() == 2);
    CHECK(std::abs(c2[2] / double(draws) - p[2] / (p[0] + p[2])) < 0.005);
}

TEST_CASE("sampler: repetition and presence penalties as HF and OpenAI define them") {
    SamplingParams sp;
    sp.temperature = 0.0f;
    sp.repetition_penalty = 2.0f;
    Sampler rep(sp);
    // context: token 0 (positive logit) twice, token 1 (negative) once; token 9 is outside the vocabulary.
    std::vector<float> l = {2.0f, -1.0f, 0.5f, 3.0f};
    rep.sample(l.data(), 4, {0, 1, 0, 9}, 3);
    CHECK(l == std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f});  // positive / 2, negative * 2, once each

    sp.repetition_penalty = 1.0f;
    sp.presence_penalty = 0.5f;
    Sampler pres(sp);
    l = {2.0f, -1.0f, 0.5f, 3.0f};
    // prompt {0, 2}; generated {1, 1, 3}: only generated tokens count, each once.
    int id = pres.sample(l.data(), 4, {0, 2, 1, 1, 3}, 2);
    CHECK(l == std::vector<float>{2.0f, -1.5f, 0.5f, 2.5f});
    CHECK(id == 3);

    sp.presence_penalty = -1.0f;  // a negative value encourages repeats
    Sampler enc(sp);
    l = {2.0f, -1.0f, 0.5f, 1.5f};
    CHECK(enc.sample(l.data(), 4, {0, 3}, 1) == 3);
    CHECK(l[3] == 2.5f);

    // Both together: repetition first (over prompt + generated), then presence (generated only).
    sp.repetition_penalty = 1.25f;
    sp.presence_penalty = 1.0f;
    Sampler both(sp);
    l = {2.0f, -1.0f, 0.5f, 3.0f};
    both.sample(l.data(), 4, {0, 3}, 1);
    CHECK(l[0] == doctest::Approx(1.6f));
    CHECK(l[3] == doctest::Approx(3.0f / 1.25f - 1.0f));
}

TEST_CASE("sampler: validate rejects each bad value with a clear message") {
    auto bad = [](auto set, const char* msg) {
        SamplingParams p;
        set(p);
        CHECK_THROWS_WITH_AS(validate(p), msg, Error);
        CHECK_THROWS_AS(Sampler{p}, Error);
    };
    bad([](SamplingParams& p) { p.temperature = -1; }, "temperature must be a finite number >= 0, got -1");
    bad([](SamplingParams& p) { p.temperature = NAN; }, "temperature must be a finite number >= 0, got nan");
    bad([](SamplingParams& p) { p.temperature = INFINITY; }, "temperature must be a finite number >= 0, got inf");
    bad([](SamplingParams& p) { p.top_p = 0; }, "top_p must be in (0, 1], got 0");
    bad([](SamplingParams& p) { p.top_p = 1.5f; }, "top_p must be in (0, 1], got 1.5");
    bad([](SamplingParams& p) { p.top_p = NAN; }, "top_p must be in (0, 1], got nan");
    bad([](SamplingParams& p) { p.top_k = -1; }, "top_k must be >= 0 (0 = off), got -1");
    bad([](SamplingParams& p) { p.min_p = -0.5f; }, "min_p must be in [0, 1], got -0.5");
    bad([](SamplingParams& p) { p.min_p = 2; }, "min_p must be in [0, 1], got 2");
    bad([](SamplingParams& p) { p.min_p = NAN; }, "min_p must be in [0, 1], got nan");
    bad([](SamplingParams& p) { p.repetition_penalty = 0; }, "repetition_penalty must be a finite number > 0, got 0");
    bad([](SamplingParams& p) { p.repetition_penalty = NAN; },
        "repetition_penalty must be a finite number > 0, got nan");
    bad([](SamplingParams& p) { p.presence_penalty = 2.5f; }, "presence_penalty must be in [-2, 2], got 2.5");
    bad([](SamplingParams& p) { p.presence_penalty = NAN; }, "presence_penalty must be in [-2, 2], got nan");

    bad([](SamplingParams& p) { p.frequency_penalty = -2.5f; }, "frequency_penalty must be in [-2, 2], got -2.5");
    bad([](SamplingParams& p) { p.repeat_last_n = -2; },
        "repeat_last_n must be >= -1 (-1 = the whole context), got -2");
    bad([](SamplingParams& p) { p.logit_bias = {{3, 101.0f}}; },
        "logit_bias: the bias of token 3 must be in [-100, 100], got 101");
    bad([](SamplingParams& p) { p.logit_bias = {{3, NAN}}; },
        "logit_bias: the bias of token 3 must be in [-100, 100], got nan");
    bad([](SamplingParams& p) { p.logit_bias = {{-1, 1.0f}}; }, "logit_bias: token id -1 is negative");
    bad([](SamplingParams& p) { p.logit_bias = {{5, 1.0f}, {2, 0.0f}, {5, 2.0f}}; },
        "logit_bias: token 5 is given twice");
    bad([](SamplingParams& p) { p.logprobs = 21; }, "logprobs must be in [0, 20] (-1 = off), got 21");
    bad([](SamplingParams& p) { p.logprobs = -2; }, "logprobs must be in [0, 20] (-1 = off), got -2");

    SamplingParams edge;  // the ends of each range are valid
    edge.temperature = 0, edge.top_p = 1, edge.top_k = 0, edge.min_p = 1, edge.presence_penalty = -2;
    edge.frequency_penalty = 2, edge.repeat_last_n = -1, edge.logit_bias = {{0, -100.0f}, {1, 100.0f}};
    edge.logprobs = 20;
    CHECK_NOTHROW(validate(edge));
    SamplingParams every;  // a bias for each id of a 152k vocabulary: checked by sorting, not pair by pair
    for (int id = 151935; id >= 0; id--) every.logit_bias.push_back({id, 1.0f});
    CHECK_NOTHROW(validate(every));
    every.logit_bias.push_back({70000, 2.0f});
    CHECK_THROWS_WITH_AS(validate(every), "logit_bias: token 70000 is given twice", Error);
}

TEST_CASE("sampler: frequency penalty, logit bias and the repetition window as OpenAI and llama.cpp define them") {
    SamplingParams sp;
    sp.temperature = 0.0f;
    sp.frequency_penalty = 0.5f;
    sp.presence_penalty = 0.25f;
    Sampler freq(sp);
    std::vector<float> l = {2.0f, 1.0f, 0.5f, 3.0f};
    // prompt {3}; generated 1 three times, 2 once: l -= c * 0.5 + 0.25 (the prompt's token 3 is not touched)
    freq.sample(l.data(), 4, {3, 1, 2, 1, 1}, 1);
    CHECK(l == std::vector<float>{2.0f, 1.0f - 1.75f, 0.5f - 0.75f, 3.0f});

    SamplingParams bias;
    bias.temperature = 0.0f;
    bias.logit_bias = {{0, 5.0f}, {3, -100.0f}, {77, 9.0f}};  // 77 is outside the vocabulary: ignored
    Sampler b(bias);
    l = {2.0f, 1.0f, 0.5f, 3.0f};
    CHECK(b.sample(l.data(), 4, {}, 0) == 0);
    CHECK(l == std::vector<float>{7.0f, 1.0f, 0.5f, -97.0f});
    // the bias comes before the repetition penalty: a biased positive logit is divided whole
    bias.logit_bias = {{0, 2.0f}};
    bias.repetition_penalty = 2.0f;
    Sampler br(bias);
    l = {2.0f, 1.0f, 0.5f, 3.0f};
    br.sample(l.data(), 4, {0}, 1);
    CHECK(l[0] == 2.0f);
    l = {FLT_MAX, 1.0f, 0.5f, 3.0f};  // and it never makes a logit infinite
    bias.repetition_penalty = 1;
    bias.logit_bias = {{0, 100.0f}};
    Sampler clamp(bias);
    clamp.sample(l.data(), 4, {}, 0);
    CHECK(l[0] == FLT_MAX);

    SamplingParams win;
    win.temperature = 0.0f;
    win.repetition_penalty = 2.0f;
    win.repeat_last_n = 2;  // only the last two context tokens count
    Sampler w(win);
    l = {2.0f, 1.0f, 0.5f, 3.0f};
    w.sample(l.data(), 4, {0, 1, 2, 3}, 4);
    CHECK(l == std::vector<float>{2.0f, 1.0f, 0.25f, 1.5f});
    win.repeat_last_n = 0;  // off
    Sampler off(win);
    l = {2.0f, 1.0f, 0.5f, 3.0f};
    off.sample(l.data(), 4, {0, 1, 2, 3}, 4);
    CHECK(l == std::vector<float>{2.0f, 1.0f, 0.5f, 3.0f});
    CHECK(repeat_window_begin(10, -1) == 0);
    CHECK(repeat_window_begin(10, 3) == 7);
    CHECK(repeat_window_begin(2, 3) == 0);
}

TEST_CASE("sampler: logprobs are the log-softmax of the logits before the penalties, the top ones in order") {
    const int n = 1000;
    std::vector<float> logits = random_logits(n, 7, 8.0f);
    logits[10] = logits[11] = 50.0f;  // a tie at the top: the lower id comes first
    // the reference in long double
    long double m = *std::max_element(logits.begin(), logits.end()), sum = 0;
    for (float x : logits) sum += std::exp((long double)x - m);
    auto logp = [&](int i) { return double((long double)logits[size_t(i)] - m - std::log(sum)); };
    for (float temp : {0.0f, 0.7f, 1.5f}) {
        SamplingParams sp;
        sp.temperature = temp;
        sp.top_k = 0;
        sp.top_p = 1;
        sp.repetition_penalty = 1.3f;  // penalties and temperature change the draw, not the logprobs
        sp.presence_penalty = 1.0f;
        sp.logit_bias = {{12, 40.0f}};
        sp.logprobs = 5;
        sp.seed = 3;
        Sampler s(sp);
        for (int step = 0; step < 20; step++) {
            std::vector<float> l = logits;
            int id = s.sample(l.data(), n, {10, 12, 500}, 1);
            CAPTURE(temp);
            CHECK(s.logprobs.chosen.id == id);
            CHECK(s.logprobs.chosen.logprob == doctest::Approx(logp(id)).epsilon(1e-5));
            REQUIRE(s.logprobs.top.size() == 5);
            CHECK(s.logprobs.top[0].id == 10);
            CHECK(s.logprobs.top[1].id == 11);
            double total = 0;
            for (size_t k = 0; k < 5; k++) {
                CHECK(s.logprobs.top[k].logprob == doctest::Approx(logp(s.logprobs.top[k].id)).epsilon(1e-5));
                if (k) CHECK(s.logprobs.top[k].logprob <= s.logprobs.top[k - 1].logprob);
                total += std::exp(double(s.logprobs.top[k].logprob));
            }
            CHECK(total <= 1.0 + 1e-6);
        }
    }
    // off: nothing recorded
    SamplingParams none;
    Sampler s(none);
    std::vector<float> l = logits;
    s.sample(l.data(), n, {}, 0);
    CHECK(s.logprobs.top.empty());
    CHECK(s.logprobs.chosen.id == -1);
}

TEST_CASE("sampler: default_sampling takes the generation-config values that are given") {
    ChatInfo none;
    SamplingParams d = default_sampling(none), plain;
    CHECK(d.temperature == plain.temperature);
    CHECK(d.top_p == plain.top_p);
    CHECK(d.top_k == plain.top_k);
    CHECK(d.repetition_penalty == plain.repetition_penalty);

    ChatInfo chat;
    chat.temperature = 0.6f, chat.top_p = 0.95f, chat.top_k = 0, chat.repetition_penalty = 1.05f;
    SamplingParams g = default_sampling(chat);
    CHECK(g.temperature == 0.6f);
    CHECK(g.top_p == 0.95f);
    CHECK(g.top_k == 0);
    CHECK(g.repetition_penalty == 1.05f);

    ChatInfo greedy;  // do_sample false: the exporter records temperature 0
    greedy.temperature = 0.0f;
    CHECK(default_sampling(greedy).temperature == 0.0f);
}

TEST_CASE("sampler: a 152k vocabulary without top-k does not sort the whole vocabulary") {
    const int n = 151936;
    std::vector<float> logits = random_logits(n, 11, 12.0f);
    SamplingParams sp;
    sp.temperature = 0.7f, sp.top_k = 0, sp.top_p = 0.8f, sp.seed = 3;
    Sampler s(sp);
    std::set<int> want = reference_kept(logits, sp), got;
    for (const Sampler::Candidate& c : s.keep(logits.data(), n)) got.insert(c.id);
    CHECK(got == want);
    double t0 = now_seconds();
    for (int i = 0; i < 20; i++) {
        std::vector<float> l = logits;
        CHECK(want.count(s.sample(l.data(), n, {}, 0)) == 1);
    }
    MESSAGE("top-p sampling over 151936 logits: ", (now_seconds() - t0) / 20 * 1e3, " ms per token");
}

TEST_CASE("sampler: non-finite logits are refused, and a tiny penalty cannot overflow to inf") {
    const std::vector<int> ctx = {1, 2, 3};
    for (float temperature : {0.0f, 1.0f}) {
        SamplingParams sp;
        sp.temperature = temperature;
        Sampler s(sp);
        std::vector<float> l = {0.5f, 1.0f, NAN, 0.25f};
        CHECK_THROWS_WITH_AS(s.sample(l.data(), 4, ctx, 3), "sampler: the model produced a non-finite logit (nan for token 2)",
                             Error);
        l = {0.5f, INFINITY, 0.0f, 0.25f};
        CHECK_THROWS_AS(s.sample(l.data(), 4, ctx, 3), Error);
        l = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        CHECK_THROWS_WITH_AS(s.sample(l.data(), 4, ctx, 3), "sampler: every logit is -inf", Error);
    }
    SamplingParams sp;
    sp.temperature = 1.0f;
    sp.repetition_penalty = 1e-38f;  // valid (> 0), and 1 / 1e-38 overflows fp32
    Sampler s(sp);
    for (int i = 0; i < 100; i++) {
        std::vector<float> l = {5.0f, -2.0f, 1.0f, 0.5f, 0.0f};
        int id = s.sample(l.data(), 5, {0, 1, 2}, 3);
        CHECK(l[0] == std::numeric_limits<float>::max());  // 5 / 1e-38 is clamped to the largest float
        CHECK(l[1] == doctest::Approx(-2e-38f));
        CHECK(id == 0);  // the penalised positive logit dominates everything else
    }
}
