// CPU forward pass against the Hugging Face fp32 logits of the three tiny fixtures, at every position:
// token-by-token decode, one batched prefill, prefill in chunks; greedy ids; argument checks.
#include "fixtures.hpp"

using namespace qwen;
using json = nlohmann::json;

namespace {

// max_i |got_i - ref_i| / max_i |ref_i|: the error relative to the row's scale
double relative_error(const float* got, const float* ref, int n) {
    double diff = 0, scale = 0;
    for (int i = 0; i < n; i++) {
        diff = std::max(diff, double(std::abs(got[i] - ref[i])));
        scale = std::max(scale, double(std::abs(ref[i])));
    }
    return diff / scale;
}

}  // namespace

TEST_CASE("forward: CPU logits match Hugging Face at every position") {
    for (std::string name : kFixtures) {
        CAPTURE(name);
        Model model = load_fixture(name);
        Reference ref = load_reference(name);
        const int V = model.config.vocab_size;
        CpuEngine engine(model, 128);
        SamplingParams greedy_params;
        greedy_params.temperature = 0;
        Sampler greedy_sampler(greedy_params);
        double err_decode = 0, err_prefill = 0;
        int n_greedy = 0;
        for (const json& cs : ref.cases) {
            std::vector<int> input = cs["input_ids"], greedy = cs["greedy_ids"];
            std::vector<int> ids = input;
            ids.insert(ids.end(), greedy.begin(), greedy.end());
            const int T = int(ids.size());
            REQUIRE(cs["logits_shape"] == json::array({T, V}));
            const float* want = &ref.logits[size_t(cs["logits_offset_bytes"]) / sizeof(float)];
            CAPTURE(cs["prompt"].get<std::string>());

            // Token by token: row t of the reference is the logits after position t. The greedy steps go through
            // Engine::sample with a temperature-0 sampler, as the generate loop does.
            std::vector<float> decoded(size_t(T) * V);
            for (int t = 0; t < T; t++) {
                engine.forward(&ids[size_t(t)], 1, t);
                std::copy(engine.logits(), engine.logits() + V, &decoded[size_t(t) * V]);
                err_decode = std::max(err_decode, relative_error(engine.logits(), want + size_t(t) * V, V));
                int g = t - int(input.size()) + 1;  // index of the greedy token these logits predict
                if (g >= 0 && g < int(greedy.size())) {
                    std::vector<int> context(ids.begin(), ids.begin() + t + 1);
                    CHECK(engine.sample(greedy_sampler, V, context, input.size()) == greedy[size_t(g)]);
                    n_greedy++;
                }
            }

            // One batched prefill of the whole sequence: bit-identical to decoding (same sums in the same order).
            engine.forward(ids.data(), T, 0);
            err_prefill = std::max(err_prefill, relative_error(engine.logits(), want + size_t(T - 1) * V, V));
            CHECK(std::equal(engine.logits(), engine.logits() + V, &decoded[size_t(T - 1) * V]));

            // Prefill in uneven chunks, continuing the same cache; check after each chunk.
            for (int begin = 0, size = 3; begin < T; begin += size, size = size * 2 + 1) {
                int n = std::min(size, T - begin);
                engine.forward(&ids[size_t(begin)], n, begin);
                CHECK(std::equal(engine.logits(), engine.logits() + V, &decoded[size_t(begin + n - 1) * V]));
            }

            // Rewinding: positions are absolute, so re-running position 4 sees only rows 0..3 of the cache.
            engine.forward(&ids[4], 1, 4);
            CHECK(std::equal(engine.logits(), engine.logits() + V, &decoded[size_t(4) * V]));
        }
        MESSAGE(name, ": max relative error decode ", err_decode, ", prefill ", err_prefill, " (", ref.cases.size(),
                " cases, ", n_greedy, " greedy steps)");
        CHECK(err_decode <= 1e-4);
        CHECK(err_prefill <= 1e-4);
    }
}

TEST_CASE("forward: ThreadPool covers a range exactly once, job after job") {
    for (int threads : {1, 2, 5}) {
        ThreadPool pool(threads);
        CHECK(pool.size() == threads);
        for (int n : {0, 1, 3, 7, 1000}) {
            std::vector<int> hits(size_t(n), 0);
            for (int rep = 0; rep < 3; rep++)  // the same pool runs job after job
                pool.parallel_for(n, [&](int begin, int end) {
                    for (int i = begin; i < end; i++) hits[size_t(i)]++;
                });
            CHECK(std::count(hits.begin(), hits.end(), 3) == n);
        }
    }
}

TEST_CASE("forward: results do not depend on the thread count") {
    Model model = load_fixture("tiny-qwen3");
    std::vector<int> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
    CpuEngine one(model, 64, 1), three(model, 64, 3);
    one.forward(ids.data(), int(ids.size()), 0);
    three.forward(ids.data(), int(ids.size()), 0);
    const int V = model.config.vocab_size;
    CHECK(std::equal(one.logits(), one.logits() + V, three.logits()));
}

TEST_CASE("forward: rejects bad arguments with clear messages") {
    Model model = load_fixture("tiny-qwen2");
    CHECK_THROWS_WITH_AS(CpuEngine(model, 0), "context size must be in [1, 1024] (the model's max_seq_len), got 0",
                         Error);
    CHECK_THROWS_AS(CpuEngine(model, 1025), Error);
    CpuEngine engine(model, 8);
    std::vector<int> ids(9, 1);
    CHECK_THROWS_WITH_AS(engine.forward(ids.data(), 9, 0), "forward: positions 0..8 exceed the context size 8", Error);
    CHECK_THROWS_WITH_AS(engine.forward(ids.data(), 2, 7), "forward: positions 7..8 exceed the context size 8", Error);
    CHECK_THROWS_AS(engine.forward(ids.data(), 1, 8), Error);
    CHECK_THROWS_WITH_AS(engine.forward(ids.data(), 1, -1), "forward: position must be >= 0, got -1", Error);
    CHECK_THROWS_WITH_AS(engine.forward(ids.data(), 0, 0), "forward: need at least one token, got n = 0", Error);
    ids[1] = 512;
    CHECK_THROWS_WITH_AS(engine.forward(ids.data(), 2, 0),
                         "forward: token id 512 at index 1 is outside the vocabulary [0, 512)", Error);
    ids[1] = -1;
    CHECK_THROWS_AS(engine.forward(ids.data(), 2, 0), Error);
    ids[1] = 1;
    CHECK_NOTHROW(engine.forward(ids.data(), 8, 0));  // the whole context is fine
    CHECK(std::string(engine.name()) == "cpu");
    CHECK(engine.context_size() == 8);
}
