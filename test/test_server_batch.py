"""qwen-server decoding many requests together (--parallel, continuous batching) on the tiny model, CPU engine.

The CPU engine's batched logits are bit-identical to a sequence run alone, so every answer must equal the one a
server running one sequence at a time gives, whatever ran beside it: under preemption (a KV pool too small for
all the running sequences), with prefixes taken from the prefix cache, with seeded sampling. Run from the
repository root after `make` (see test_server.py).
"""
import json
import re
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from test_server import MODEL, SERVER, VARIED, Server, get_json, open_stream, post, stream_text

# The tiny model's KV cache on the CPU: 2 layers x (K, V) x 16 tokens x 32 floats = 8 KiB a block.
BLOCK_BYTES = 2 * 2 * 16 * 32 * 4
POOL_BLOCKS = 24  # with -c 256 (16 blocks a context): fewer than 8 sequences of ~100 tokens need, so they preempt
POOL_GIB = f"{(POOL_BLOCKS + 0.5) * BLOCK_BYTES / 2**30:.9f}"


@pytest.fixture(scope="module")
def batched():
    s = Server("batch", "--parallel", "8", "-c", "256", "--kv-memory", POOL_GIB)
    yield s
    assert s.stop() == 0, s.log_text()


@pytest.fixture(scope="module")
def alone():
    """The reference: one sequence at a time."""
    s = Server("batch-alone", "--parallel", "1", "-c", "256")
    yield s
    assert s.stop() == 0, s.log_text()


def metrics(server):
    """The unlabelled samples of /metrics: name -> value."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) (\S+)$", text, re.M)}


def health(server):
    h = get_json(server.url + "/health")
    assert h["status"] == "ok" and set(h) == {"status", "running", "waiting", "kv_blocks"}, h
    return h


def wait_all_free(server, seconds=5):
    """Polls /health until no sequence runs or waits and every block is free; returns the last answer."""
    deadline = time.time() + seconds
    while True:
        h = health(server)
        if (h["running"], h["waiting"], h["kv_blocks"]["free"]) == (0, 0, h["kv_blocks"]["total"]):
            return h
        if time.time() > deadline:
            return h
        time.sleep(0.05)


def request(i):
    """Request i of the mix: chat or text completion, greedy or seeded sampling, prompts of several lengths
    (some sharing a long beginning), answers of several lengths."""
    topic = " and ".join(["the rain in the valley"] * (1 + i % 5))
    params = {"max_tokens": 40 + 8 * (i % 4)}
    params.update({"temperature": 0} if i % 3 == 0 else {**VARIED, "seed": 1000 + i})
    if i % 2:
        return "/v1/completions", {"prompt": f"Story {i}: {topic}.", **params}
    return "/v1/chat/completions", {"messages": [{"role": "user", "content": f"Tell me about {topic}, {i}."}],
                                    **params}


def test_concurrent_streams_equal_their_answers_alone(batched, alone):
    """32 streaming clients at once against --parallel 8 with a pool that forces preemptions: each gets the
    whole answer it gets alone, /health answers throughout, and at the end every block is free."""
    n = 32
    expected = [stream_text(alone, *request(i)) for i in range(n)]
    assert len({text for text, _ in expected}) > n // 2, "the answers should differ"
    preempted_before = metrics(batched)["qwen_preemptions_total"]

    results, errors = [None] * n, []
    start = threading.Barrier(n + 1)

    def client(i):
        start.wait()
        try:
            results[i] = stream_text(batched, *request(i), accept_gzip=i % 4 == 1)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    seen = []
    while any(t.is_alive() for t in threads):
        t0 = time.monotonic()
        seen.append(health(batched))
        assert time.monotonic() - t0 < 2, "/health was slow while the streams ran"
        time.sleep(0.01)
    for t in threads:
        t.join(60)
    assert not errors, errors
    for i in range(n):
        assert results[i] == expected[i], (i, request(i), results[i], expected[i])
    assert max(h["running"] for h in seen) >= 2, seen[:5]  # they did run together
    assert all(h["running"] <= 8 for h in seen)
    assert metrics(batched)["qwen_preemptions_total"] > preempted_before, "the small pool should have preempted"
    h = wait_all_free(batched)
    assert (h["running"], h["waiting"], h["kv_blocks"]["free"], h["kv_blocks"]["total"]) == \
        (0, 0, POOL_BLOCKS, POOL_BLOCKS), h


def test_shared_prefix_comes_from_the_cache(batched, alone):
    """A second request that shares a long beginning with a first runs only the rest (usage.cached_tokens,
    the request log) and answers as a server that never saw the first does."""
    system = "You are a careful assistant who answers in short sentences about weather. " * 3
    first = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "Is it cold?"}],
             "temperature": 0, "max_tokens": 8}
    second = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "Will it rain?"}],
              **VARIED, "seed": 7, "max_tokens": 16}
    url = "/v1/chat/completions"
    status, _, a = post(batched.url + url, first)
    assert status == 200 and a["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}, a["usage"]
    status, _, b = post(batched.url + url, second)
    usage = b["usage"]
    assert status == 200 and 32 <= usage["prompt_tokens_details"]["cached_tokens"] < usage["prompt_tokens"], usage
    assert usage["prompt_tokens_details"]["cached_tokens"] % 16 == 0  # whole blocks
    cold = post(alone.url + url, second)[2]
    assert cold["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}, cold["usage"]
    assert b["choices"] == cold["choices"]
    new = usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"]
    deadline = time.time() + 5
    while f"prompt {usage['prompt_tokens']} ({new} new)" not in batched.log_text() and time.time() < deadline:
        time.sleep(0.05)
    assert f"prompt {usage['prompt_tokens']} ({new} new)" in batched.log_text()
    # A streamed answer reports it too (stream_options.include_usage).
    _, _, s = post(batched.url + url, {**second, "stream": True, "stream_options": {"include_usage": True}})
    events = [json.loads(line[6:]) for line in s.decode().split("\n\n") if line.startswith("data: {")]
    assert events[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] >= 32, events[-1]


def test_follow_up_takes_every_full_block_of_the_turn_before(batched):
    """A chat follow-up takes every full block of the previous prompt from the cache, also when that prompt
    itself began with a cached block (the default system prompt, cached by the request before)."""
    assert post(batched.url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                       "max_tokens": 1})[0] == 200
    convo = [{"role": "user", "content": "Remember this long sentence about cache reuse please."}]
    status, _, first = post(batched.url + "/v1/chat/completions", {"messages": convo, "max_tokens": 4,
                                                                    "temperature": 0})
    assert status == 200 and first["usage"]["prompt_tokens_details"]["cached_tokens"] >= 16, first["usage"]
    n_first = first["usage"]["prompt_tokens"]
    convo += [{"role": "assistant", "content": first["choices"][0]["message"]["content"]},
              {"role": "user", "content": "next"}]
    usage = post(batched.url + "/v1/chat/completions", {"messages": convo, "max_tokens": 2,
                                                        "temperature": 0})[2]["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] >= n_first // 16 * 16, (n_first, usage)


def test_a_cached_block_is_only_taken_at_its_own_position(batched, alone):
    """A block is cached for its whole prefix: a prompt whose first 16 tokens equal the second block of an
    earlier prompt must not take that block (its keys and values belong to positions 16..31 after other
    tokens). One token a letter: X and Y are one block each."""
    x, y = "ABCDEFGHIJKLMNOP", "QRSTUVWXYZ012345"
    body = {"max_tokens": 12, **VARIED, "seed": 3, "logprobs": 2}
    url = "/v1/completions"
    for prompt in (x + "!!", x + y + "!"):  # X cached first, then X+Y computed after a cached X
        assert post(batched.url + url, {"prompt": prompt, **body})[0] == 200
    status, _, hot = post(batched.url + url, {"prompt": y + "?#", **body})
    cold = post(alone.url + url, {"prompt": y + "?#", **body})[2]
    assert status == 200 and hot["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}, hot["usage"]
    assert hot["choices"] == cold["choices"]


def test_a_client_that_hangs_up_frees_its_blocks(batched):
    """A streaming client that disconnects mid-answer: its sequence is cancelled and its blocks freed."""
    assert wait_all_free(batched)["running"] == 0
    sock = open_stream(batched.port, "/v1/completions",
                       {"prompt": "Once upon a time", "temperature": 0, "max_tokens": 100000, "stream": True})
    h = health(batched)  # the answer runs until the context is full: it is still going
    assert h["running"] == 1 and h["kv_blocks"]["free"] < h["kv_blocks"]["total"], h
    sock.close()
    h = wait_all_free(batched)
    assert (h["running"], h["waiting"], h["kv_blocks"]["free"]) == (0, 0, POOL_BLOCKS), h


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "Once upon a time", "n": 16, "max_tokens": 100000}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell a story"}], "n": 16,
                              "max_completion_tokens": 100000}),
])
def test_a_client_that_hangs_up_before_a_whole_answer_frees_its_blocks(batched, path, body):
    """The same for an answer sent whole at the end (not streamed): the server notices the closed connection
    while it waits for the answer, cancels its sequences and logs the request as 499."""
    assert wait_all_free(batched)["running"] == 0
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", batched.port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    deadline = time.time() + 10
    while health(batched)["running"] == 0:  # 16 answers that run until the context is full, in a small pool
        assert time.time() < deadline, "the request never started"
        time.sleep(0.01)
    sock.close()
    h = wait_all_free(batched)
    assert (h["running"], h["waiting"], h["kv_blocks"]["free"]) == (0, 0, POOL_BLOCKS), h
    deadline = time.time() + 5
    while not re.search(rf"POST {re.escape(path)} 499 .* the client closed the connection before the answer\n",
                        batched.log_text()):
        assert time.time() < deadline, batched.log_text()[-2000:]
        time.sleep(0.05)


@pytest.mark.parametrize("args, message", [
    (["--parallel", "0"], "--parallel must be in [1, 1024], got 0"),
    (["--parallel", "-1"], "--parallel must be in [1, 1024], got -1"),
    (["-np", "x"], "-np expects an integer, got 'x'"),
    (["--parallel"], "--parallel needs a value"),
    (["--kv-memory", "0"], "--kv-memory must be in (0, 65536] GiB, got 0"),
    (["--kv-memory", "lots"], "--kv-memory expects a number, got 'lots'"),
    (["--kv-memory", "0.0001", "--cpu"], "less than one context of 1024 tokens"),
])
def test_bad_batching_flags(args, message):
    r = subprocess.run([SERVER, "-m", MODEL, *args], capture_output=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert re.fullmatch(rb"qwen-server: error: .* \(see qwen-server -h\)\n", r.stderr), r.stderr
    assert message.encode() in r.stderr, r.stderr


def test_a_pool_beyond_memory_is_one_line():
    """--kv-memory more than the machine has (here: than a 4 GB address space) is refused in one line."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    r = subprocess.run([SERVER, "-m", MODEL, "--cpu", "--kv-memory", "60000"], capture_output=True, timeout=60,
                       preexec_fn=limit)
    assert r.returncode == 1, r.stderr
    assert r.stderr == b"qwen-server: error: out of memory for the engine and its KV pool (--kv-memory 60000 GiB)\n"


def test_start_up_line_names_the_batching(batched):
    assert re.search(r"qwen-server: cpu engine, context 256 tokens, 8 sequences at once \(--parallel\), KV pool "
                     rf"{POOL_BLOCKS} blocks \({POOL_BLOCKS * 16} tokens\)", batched.log_text()), batched.log_text()
    m = metrics(batched)
    assert m["qwen_kv_blocks"] == POOL_BLOCKS and m["qwen_sequences_running"] >= 0
    assert {"qwen_sequences_waiting", "qwen_kv_blocks_free", "qwen_kv_blocks_cached"} <= set(m)
