// Continuous batching on the CPU engine: the batched step over block tables (logits bit-identical to each sequence
// alone), the KV pool's bookkeeping and prefix cache, and the Scheduler (every answer token-identical to running
// its prompt alone, under preemption, with prefix caching, seeded sampling, cancellation; every block free at the end).
#include <doctest/doctest.h>

#include <numeric>
#include <random>

#include "../qwen.hpp"
#include "fixtures.hpp"

using namespace qwen;

namespace {

// n distinct prompts of mixed lengths (1 .. about 3 blocks and more), made of the tokenizer's text.
std::vector<std::vector<int>> mixed_prompts(const Tokenizer& tok, int n, uint64_t seed) {
    const char* words[] = {"Once", " upon", " a", " time", " the", " model", " said", " hello", " to", " 你好",
                           " world", " and", " then", ",", " it", " rained", "."};
    std::mt19937_64 rng(seed);
    std::vector<std::vector<int>> out;
    for (int i = 0; i < n; i++) {
        std::string text;
        int len = 1 + int(rng() % (i % 4 == 3 ? 70 : 25));
        for (int w = 0; w < len; w++) text += words[rng() % (sizeof words / sizeof *words)];
        out.push_back(tok.encode(text, true));
        if (out.back().size() > 100) out.back().resize(100);
    }
    return out;
}

// Runs prompt alone through a fresh Session on `engine` (cache reset).
GenerateResult alone(Engine& engine, const Tokenizer& tok, const std::vector<int>& prompt, const SamplingParams& sp,
                     const GenerateOptions& opt) {
    Session session(engine, tok);
    Sampler s(sp);
    return session.generate(prompt, s, opt);
}

// Runs every prompt through the scheduler until it is idle; results by submission order.
std::vector<Scheduler::Finished> run_all(Scheduler& sched, const std::vector<std::vector<int>>& prompts,
                                         const std::vector<SamplingParams>& sp, const GenerateOptions& opt) {
    std::vector<Scheduler::Finished> out(prompts.size());
    std::map<int, size_t> index;  // id -> submission order
    for (size_t i = 0; i < prompts.size(); i++) index[sched.submit(prompts[i], sp[i], opt)] = i;
    int steps = 0;
    while (!sched.idle()) {
        for (Scheduler::Finished& f : sched.step()) out[index.at(f.id)] = std::move(f);
        REQUIRE(++steps < 100000);  // never an endless loop
    }
    return out;
}

}  // namespace

TEST_CASE("CpuEngine::step: a batch of sequences with shuffled block tables gives each one's logits bit for bit") {
    for (const char* name : kFixtures) {
        CAPTURE(name);
        Model model = load_fixture(name);
        const int V = model.config.vocab_size, ctx = 96;
        CpuEngine ref(model, ctx, 2);
        CpuEngine batched(model, ctx, 2, 4 * kv_blocks_for(ctx));
        // Three sequences: lengths that end mid-block, one longer than a CpuEngine block of rows (kBatch).
        std::vector<std::vector<int>> seqs = {{}, {}, {}};
        std::mt19937_64 rng(7);
        int lens[3] = {37, 5, 50};
        for (int s = 0; s < 3; s++)
            for (int t = 0; t < lens[s]; t++) seqs[size_t(s)].push_back(int(rng() % uint64_t(V)));
        // The block tables interleave the sequences' blocks (block b of sequence s is 3b + s), the last in
        // reverse order, so that rows placed by position rather than through the table would collide.
        const int nb = kv_blocks_for(ctx);
        std::vector<std::vector<int>> tables(3);
        for (int s = 0; s < 3; s++)
            for (int b = 0; b < nb; b++) tables[size_t(s)].push_back(3 * (s == 2 ? nb - 1 - b : b) + s);
        // Each step runs a different cut of each sequence: prompt chunks of several sizes mixed with single tokens.
        std::vector<std::vector<int>> cuts = {{20, 1, 1, 7, 8}, {1, 1, 3}, {33, 1, 16}};
        std::vector<int> at(3, 0);
        for (size_t k = 0; k < 5; k++) {
            std::vector<SeqStep> batch;
            std::vector<int> who;
            for (int s = 0; s < 3; s++) {
                if (k >= cuts[size_t(s)].size()) continue;
                SeqStep q;
                q.tokens = seqs[size_t(s)].data() + at[size_t(s)];
                q.n = cuts[size_t(s)][k];
                q.pos = at[size_t(s)];
                q.blocks = tables[size_t(s)].data();
                q.want_logits = s != 1 || k != 0;  // one sequence skips its logits once
                batch.push_back(q);
                who.push_back(s);
            }
            batched.step(batch);
            for (size_t i = 0; i < batch.size(); i++) {
                int s = who[i];
                ref.forward(seqs[size_t(s)].data(), at[size_t(s)] + batch[i].n, 0);  // the sequence alone, from 0
                at[size_t(s)] += batch[i].n;
                if (!batch[i].want_logits) {
                    CHECK_THROWS_AS(batched.logits(int(i)), Error);
                    continue;
                }
                CHECK(std::equal(ref.logits(), ref.logits() + V, batched.logits(int(i))));
            }
        }
        // A fourth sequence shares sequence 0's first two blocks (its first 32 tokens, computed above) through its
        // table and runs only the rest: its logits are those of the whole sequence alone.
        std::vector<int> shared(seqs[0].begin(), seqs[0].begin() + 2 * KV_BLOCK);
        for (int t = 0; t < 9; t++) shared.push_back(int(rng() % uint64_t(V)));
        std::vector<int> table = {tables[0][0], tables[0][1], 3 * nb};  // a block no other sequence uses
        SeqStep q;
        q.tokens = shared.data() + 2 * KV_BLOCK, q.n = 9, q.pos = 2 * KV_BLOCK, q.blocks = table.data();
        batched.step({q});
        ref.forward(shared.data(), int(shared.size()), 0);
        CHECK(std::equal(ref.logits(), ref.logits() + V, batched.logits()));
    }
}

TEST_CASE("Engine::step refuses bad batches with one clear error") {
    Model model = load_fixture("tiny-qwen2");
    CpuEngine e(model, 32, 1, 8);  // 8 blocks: 128 rows
    int toks[4] = {1, 2, 3, 4};
    int table[2] = {0, 1}, other[2] = {1, 2}, shares[2] = {0, 2}, bad[2] = {0, 8};
    auto one = [&](const int* t, int n, int pos) {
        SeqStep q;
        q.tokens = toks, q.n = n, q.pos = pos, q.blocks = t;
        return q;
    };
    CHECK_THROWS_WITH_AS(e.step({}), "step: the batch is empty", Error);
    CHECK_THROWS_WITH_AS(e.step({one(bad, 4, 14)}), "step: block id 8 is outside the pool of 8 blocks", Error);
    CHECK_THROWS_WITH_AS(e.step({one(table, 4, 14), one(other, 4, 14)}), "step: block 1 is written by sequences 0 and 1",
                         Error);
    CHECK_THROWS_WITH_AS(e.step({one(nullptr, 1, 0)}), "step: sequence 0 has no block table", Error);
    CHECK_THROWS_WITH_AS(e.step({one(table, 4, 30)}), "forward: positions 30..33 exceed the context size 32", Error);
    // two sequences may read one block (a shared prefix): only the blocks from pos / KV_BLOCK on are written
    CHECK_NOTHROW(e.step({one(table, 1, 16), one(shares, 1, 16)}));
    CHECK(e.kv_blocks() == 8);
    CHECK(CpuEngine(model, 33, 1).kv_blocks() == 3);  // at least one context
    CHECK_THROWS_AS(CpuEngine(model, 32, 1, -1), Error);
}

TEST_CASE("KvPool: references, the prefix cache, least recently used eviction") {
    KvPool pool(4);
    CHECK(pool.n_free() == 4);
    std::vector<int> ids(3 * KV_BLOCK);
    std::iota(ids.begin(), ids.end(), 100);
    // A sequence fills two blocks and publishes them.
    int a = pool.allocate(), b = pool.allocate();
    uint64_t h0 = KvPool::chain(0, ids.data()), h1 = KvPool::chain(h0, ids.data() + KV_BLOCK);
    pool.publish(a, h0, ids.data());
    pool.publish(b, h1, ids.data() + KV_BLOCK);
    CHECK(pool.n_free() == 2);
    CHECK(pool.n_cached() == 2);
    // Another sequence with the same first 2 blocks shares them while the first still holds them.
    CHECK(pool.take_prefix(ids.data(), int(ids.size()), 8) == std::vector<int>{a, b});
    CHECK(pool.take_prefix(ids.data(), int(ids.size()), 1) == std::vector<int>{a});  // at most max_blocks
    pool.release(a), pool.release(b), pool.release(a), pool.release(a), pool.release(b);
    CHECK(pool.n_free() == 4);       // nobody holds them, but they keep their prefix
    CHECK(pool.n_cached() == 2);
    CHECK_THROWS_AS(pool.release(a), Error);
    // A different first block: no match, even for the same second block.
    std::vector<int> other = ids;
    other[3] = 7;
    CHECK(pool.take_prefix(other.data(), int(other.size()), 8).empty());
    // Allocation takes the empty blocks first, then the least recently used cached one (a: released before b).
    int c = pool.allocate(), d = pool.allocate();
    CHECK(c != a);
    CHECK(d != b);
    CHECK(pool.n_cached() == 2);
    int e = pool.allocate();
    CHECK(e == a);
    CHECK(pool.n_cached() == 1);
    CHECK(pool.take_prefix(ids.data(), int(ids.size()), 8).empty());  // the chain starts at a: gone
    CHECK(pool.allocate() == b);
    CHECK(pool.allocate() == -1);
    CHECK_THROWS_AS(KvPool(0), Error);
}

TEST_CASE("Scheduler: 32 prompts, 8 at once, a pool that forces preemption: every answer equals its prompt alone") {
    Model model = load_fixture("tiny-qwen2");
    Tokenizer tok(model.vocab);
    const int ctx = 160;
    CpuEngine single(model, ctx, 2);
    // 16 blocks = 256 rows for 8 sequences of up to ~110 tokens each: they cannot all fit.
    CpuEngine engine(model, ctx, 2, 16);
    std::vector<std::vector<int>> prompts = mixed_prompts(tok, 32, 1);
    GenerateOptions opt;
    opt.max_new_tokens = 24;
    for (bool seeded : {false, true}) {
        CAPTURE(seeded);
        std::vector<SamplingParams> sp(prompts.size());
        for (size_t i = 0; i < sp.size(); i++) {
            sp[i].temperature = seeded ? 0.9f : 0.0f;
            sp[i].top_k = seeded ? 40 : 0;
            sp[i].seed = 1000 + i;
        }
        SchedulerOptions so;
        so.max_seqs = 8;
        so.step_tokens = 48;  // long prompts go in chunks
        Scheduler sched(engine, tok, so);
        std::vector<Scheduler::Finished> got = run_all(sched, prompts, sp, opt);
        CHECK(sched.n_preempted() > 0);
        CHECK(sched.pool().n_free() == sched.pool().n_blocks());  // every block is free again
        for (size_t i = 0; i < prompts.size(); i++) {
            CAPTURE(i);
            GenerateResult want = alone(single, tok, prompts[i], sp[i], opt);
            CHECK(got[i].error == "");
            CHECK(got[i].result.ids == want.ids);
            CHECK(got[i].result.text == want.text);
            CHECK(got[i].result.finish_reason == want.finish_reason);
            CHECK(got[i].result.prompt_tokens == int(prompts[i].size()));
        }
    }
}

TEST_CASE("Scheduler: a prompt sharing a cached prefix runs only the rest and answers as a cold run") {
    Model model = load_fixture("tiny-qwen3");
    Tokenizer tok(model.vocab);
    CpuEngine engine(model, 256, 2, 64);
    std::vector<int> shared = mixed_prompts(tok, 4, 3)[3];  // a long one
    while (shared.size() < 70) shared.insert(shared.end(), shared.begin(), shared.end());
    shared.resize(70);
    std::vector<int> p1 = shared, p2 = shared;
    p1.push_back(tok.encode(" first", false)[0]);
    p2.push_back(tok.encode(" second", false)[0]);
    SamplingParams greedy;
    greedy.temperature = 0;
    GenerateOptions opt;
    opt.max_new_tokens = 10;
    Scheduler sched(engine, tok, {});
    std::vector<Scheduler::Finished> a = run_all(sched, {p1}, {greedy}, opt);
    CHECK(a[0].result.prefill_tokens == 71);
    CHECK(sched.pool().n_cached() >= 70 / KV_BLOCK);
    std::vector<Scheduler::Finished> b = run_all(sched, {p2}, {greedy}, opt);
    CHECK(b[0].result.prefill_tokens == 71 - 64);  // 4 whole blocks came from the cache
    CpuEngine cold(model, 256, 2);
    CHECK(b[0].result.ids == alone(cold, tok, p2, greedy, opt).ids);
    // The same prompt again: all but the last block's tokens cached, at least one token runs.
    std::vector<Scheduler::Finished> c = run_all(sched, {p2}, {greedy}, opt);
    CHECK(c[0].result.prefill_tokens == 71 - 64);
    CHECK(c[0].result.ids == b[0].result.ids);
    // A prompt of exactly 4 blocks whose blocks are all cached still runs its last token (from block 3 on).
    std::vector<int> p3(shared.begin(), shared.begin() + 64);
    std::vector<Scheduler::Finished> d = run_all(sched, {p3}, {greedy}, opt);
    CHECK(d[0].result.prefill_tokens == KV_BLOCK);
    CHECK(d[0].result.ids == alone(cold, tok, p3, greedy, opt).ids);
    CHECK(sched.pool().n_free() == sched.pool().n_blocks());
    // A chat: each turn's prompt is the previous prompt, its answer and a new message. Every full block of the
    // previous turns (prompt and answer, as far as they ran) comes from the cache, turn after turn.
    std::vector<int> turn = shared;  // a new conversation on the cached system prompt
    turn.push_back(tok.encode(" third", false)[0]);
    int computed = 0;  // tokens of `turn` whose keys and values the previous turn left in full blocks
    for (int k = 0; k < 3; k++) {
        std::vector<Scheduler::Finished> r = run_all(sched, {turn}, {greedy}, opt);
        if (k > 0) CHECK(r[0].result.prefill_tokens == int(turn.size()) - computed / KV_BLOCK * KV_BLOCK);
        CHECK(r[0].result.ids == alone(cold, tok, turn, greedy, opt).ids);
        computed = int(turn.size()) + int(r[0].result.ids.size()) - 1;  // the last id never ran
        turn.insert(turn.end(), r[0].result.ids.begin(), r[0].result.ids.end());
        for (int i = 0; i < 5 + 9 * k; i++) turn.push_back(shared[size_t(i * 3 % 70)]);
    }
    // With the prefix cache off, everything runs.
    SchedulerOptions off;
    off.prefix_cache = false;
    Scheduler plain(engine, tok, off);
    CHECK(run_all(plain, {p2}, {greedy}, opt)[0].result.prefill_tokens == 71);
}

TEST_CASE("Scheduler: cancelling, waiting or running, frees the blocks; bad settings and prompts are errors") {
    Model model = load_fixture("tiny-qwen2");
    Tokenizer tok(model.vocab);
    CpuEngine engine(model, 64, 1, 12);
    SamplingParams greedy;
    greedy.temperature = 0;
    GenerateOptions opt;
    opt.max_new_tokens = 40;
    SchedulerOptions so;
    so.max_seqs = 1;
    Scheduler sched(engine, tok, so);
    std::vector<int> prompt = tok.encode("Once upon a time", true);
    int a = sched.submit(prompt, greedy, opt), b = sched.submit(prompt, greedy, opt);
    sched.step();
    sched.step();
    CHECK(sched.n_running() == 1);
    CHECK(sched.n_waiting() == 1);
    CHECK(sched.pool().n_free() < sched.pool().n_blocks());
    sched.cancel(a);
    sched.cancel(b);
    std::vector<Scheduler::Finished> done = sched.step();
    REQUIRE(done.size() == 2);
    CHECK(done[0].result.finish_reason == "cancelled");
    CHECK(done[0].result.completion_tokens == 2);
    CHECK(done[1].result.finish_reason == "cancelled");
    CHECK(done[1].result.completion_tokens == 0);
    CHECK(sched.idle());
    CHECK(sched.pool().n_free() == sched.pool().n_blocks());
    // A client that stops reading (on_text returns false) ends its sequence the same way.
    sched.submit(prompt, greedy, opt, [](const std::string&) { return false; });
    std::vector<Scheduler::Finished> gone;
    while (!sched.idle())
        for (auto& f : sched.step()) gone.push_back(std::move(f));
    REQUIRE(gone.size() == 1);
    CHECK(gone[0].result.finish_reason == "cancelled");
    CHECK(sched.pool().n_free() == sched.pool().n_blocks());
    // max_new_tokens 0 ends without running
    GenerateOptions none;
    none.max_new_tokens = 0;
    sched.submit(prompt, greedy, none);
    std::vector<Scheduler::Finished> z = sched.step();
    REQUIRE(z.size() == 1);
    CHECK(z[0].result.finish_reason == "length");
    // Bad input
    CHECK_THROWS_WITH_AS(sched.submit(std::vector<int>(65, 1), greedy, opt),
                         "prompt is 65 tokens, 1 more than the context of 64", Error);
    CHECK_THROWS_WITH_AS(sched.submit({}, greedy, opt), "the prompt is empty", Error);
    SchedulerOptions zero;
    zero.max_seqs = 0;
    CHECK_THROWS_WITH_AS(Scheduler(engine, tok, zero), "--parallel must be at least 1, got 0", Error);
}
