"""qwen-server end to end: the HTTP API on the tiny random model with the CPU engine.

The model's weights are random, so its text is gibberish, but greedy decoding (temperature 0) is deterministic:
the tests compare answers between endpoints, between streaming and not, with the CLI, and between serial and
parallel clients. Run from the repository root after `make` (which builds ./qwen-server and the fixtures).
"""
import json
import os
import re
import signal
import socket
import sys
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.environ.get("QWEN_SERVER", os.path.join(ROOT, "qwen-server"))
CLI = os.environ.get("QWEN_CLI", os.path.join(ROOT, "qwen"))
MODEL = os.path.join(ROOT, "build", "tiny-qwen2.bin")
ARTIFACTS = os.path.join(ROOT, "build", "test-artifacts")
CONTEXT = 1024  # the tiny model's max_seq_len
# The random model is very sure of itself: greedy answers repeat one token (often a lone byte that is not
# UTF-8, shown as U+FFFD). A high temperature with a fixed seed gives varied, still reproducible text.
VARIED = {"temperature": 10, "top_k": 0, "top_p": 1, "min_p": 0}

if not (os.path.exists(SERVER) and os.path.exists(MODEL)):
    pytest.skip("needs ./qwen-server and build/tiny-qwen2.bin (run make first; the server is built only "
                "when pkg-config finds libmicrohttpd and nlohmann_json)", allow_module_level=True)


# ---- a running server ----------------------------------------------------------------------------------

def free_port():
    """A port nothing listens on now (bound without SO_REUSEPORT, so no one shares it either)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """./qwen-server on a free loopback port; stderr (the request log) goes to a file."""

    def __init__(self, name, *extra, binary=None, cpu=True, model=None, env=None):
        os.makedirs(ARTIFACTS, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(ARTIFACTS, f"{name}.log")
        self.log = open(self.log_path, "w")
        engine = ["--cpu"] if cpu else []
        self.proc = subprocess.Popen([binary or SERVER, "-m", model or MODEL, *engine, "--port", str(self.port), "-n",
                                      "32", *extra], stdout=subprocess.DEVNULL, stderr=self.log,
                                     env={**os.environ, **(env or {})})
        deadline = time.time() + 60
        while True:
            try:
                if get_json(self.url + "/health")["status"] == "ok":
                    break
            except (OSError, urllib.error.URLError):
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("qwen-server did not start:\n" + self.log_text())
            time.sleep(0.05)

    def log_text(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, timeout=15):
        """SIGTERM, as a service manager would send; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.log.close()


@pytest.fixture(scope="module")
def server():
    s = Server("server")
    yield s
    status = s.stop()
    assert status == 0, "qwen-server did not exit cleanly on SIGTERM:\n" + s.log_text()


# ---- small HTTP helpers -----------------------------------------------------------------------------------

def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def post(url, body, headers=None, timeout=60):
    """POST a body (dict -> JSON, or raw bytes); returns (status, headers, parsed JSON or raw bytes)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    try:
        return status, hdrs, json.loads(raw)
    except ValueError:
        return status, hdrs, raw


def chat(server, messages, **kw):
    body = {"messages": messages, "temperature": 0, "max_tokens": 24, **kw}
    status, _, out = post(server.url + "/v1/chat/completions", body)
    assert status == 200, out
    return out


def sse_request(server, path, body, accept_gzip=False):
    """Sends a streaming request over a raw socket and returns (status line, headers, [(arrival time, chunk)]).

    Reading the chunked framing by hand shows how the server actually sent the events: each one in its own
    chunk, uncompressed, as it was produced."""
    payload = json.dumps({**body, "stream": True}).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n")
    if accept_gzip:
        head += "Accept-Encoding: gzip, deflate, br\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(head.encode() + b"\r\n" + payload)
    f = sock.makefile("rb")
    status = f.readline().decode().strip()
    headers = {}
    for line in iter(f.readline, b"\r\n"):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    chunks = []
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int(f.readline().split(b";")[0], 16)
            data = f.read(size)
            f.readline()
            if size == 0:
                break
            chunks.append((time.monotonic(), data))
    else:
        chunks.append((time.monotonic(), f.read()))
    sock.close()
    return status, headers, chunks


def parse_events(raw):
    """'data: ...' payloads of an SSE body, checking the framing on the way."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), text[-80:]
    events = text[:-2].split("\n\n")
    for e in events:
        assert e.startswith("data: ") and "\n" not in e, e
    return [e[len("data: "):] for e in events]


def stream_text(server, path, body, **kw):
    """The text of a streamed answer (content deltas or completion text), and its final finish_reason."""
    status, headers, chunks = sse_request(server, path, body, **kw)
    assert status.endswith("200 OK"), status
    events = parse_events(b"".join(c for _, c in chunks))
    assert events[-1] == "[DONE]"
    text, finish = "", None
    for e in events[:-1]:
        choices = json.loads(e)["choices"]
        if not choices:  # the usage chunk of stream_options.include_usage
            continue
        choice = choices[0]
        text += choice["delta"].get("content", "") if "delta" in choice else choice["text"]
        finish = choice["finish_reason"] or finish
    return text, finish


def cli_answer(*args):
    """The CLI's stdout for the same model (bytes decoded as the server does: bad UTF-8 -> U+FFFD)."""
    out = subprocess.run([CLI, "-m", MODEL, "--cpu", *args], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout.decode("utf-8", errors="replace")


# ---- basic endpoints ------------------------------------------------------------------------------------------

def test_health_models_and_page(server):
    health = get_json(server.url + "/health")  # idle: nothing runs, every block of the KV pool is free
    assert health == {"status": "ok", "running": 0, "waiting": 0,
                      "kv_blocks": {"total": health["kv_blocks"]["total"], "free": health["kv_blocks"]["total"],
                                    "cached": health["kv_blocks"]["cached"]}}, health
    assert health["kv_blocks"]["total"] == 4 * 1024 // 16  # --parallel 4 on the CPU, whole contexts of 1024 tokens
    models = get_json(server.url + "/v1/models")
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny-qwen2"]
    with urllib.request.urlopen(server.url + "/", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/html")
        page = r.read().decode()
    assert "<title>" in page and "/v1/chat/completions" in page


def test_chat_completion_shape(server):
    out = chat(server, [{"role": "user", "content": "你好"}], max_tokens=8)
    assert re.fullmatch(r"chatcmpl-[A-Za-z0-9]+", out["id"])
    assert out["object"] == "chat.completion" and out["model"] == "tiny-qwen2"
    assert isinstance(out["created"], int)
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    u = out["usage"]
    assert u["prompt_tokens"] > 0 and 0 < u["completion_tokens"] <= 8
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_greedy_matches_cli(server):
    """The server's greedy answers equal the CLI's for the same chat message and for a raw prompt."""
    if not os.path.exists(CLI):
        pytest.skip("./qwen not built: the CLI comparison cannot run")
    for text in ["你好", "Write a haiku about the sea."]:
        out = chat(server, [{"role": "user", "content": text}], max_tokens=20)
        expected = cli_answer("-p", text, "--temp", "0", "-n", "20")
        assert expected.endswith("\n")  # chat mode ends the answer with a newline
        assert out["choices"][0]["message"]["content"] == expected[:-1]
    status, _, out = post(server.url + "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 20,
                                                            "temperature": 0})
    assert status == 200
    assert out["choices"][0]["text"] == cli_answer("-p", "Once upon a time", "--raw", "--temp", "0", "-n", "20")
    # Sampling with the same seed draws the same tokens in both.
    out = chat(server, [{"role": "user", "content": "hi"}], max_tokens=30, seed=7, **VARIED)
    expected = cli_answer("-p", "hi", "-n", "30", "-s", "7", "--temp", "10", "--top-k", "0", "--top-p", "1")
    assert out["choices"][0]["message"]["content"] == expected[:-1]


def test_seed_endpoint(server):
    """POST / as the original API: prompt + history pairs in, response + history + status + time out."""
    status, _, out = post(server.url + "/", {"prompt": "你好", "max_length": 16, "temperature": 0})
    assert status == 200
    assert out["status"] == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", out["time"])
    first = out["response"]
    again = chat(server, [{"role": "user", "content": "你好"}], max_tokens=16)
    assert first == again["choices"][0]["message"]["content"]
    assert out["history"] == [["你好", first]]

    # A second turn with pair history, and the same with an OpenAI-style message list.
    status, _, two = post(server.url + "/", {"prompt": "再见", "history": out["history"], "max_length": 16,
                                             "temperature": 0})
    assert status == 200 and two["history"][0] == ["你好", first] and len(two["history"]) == 2
    msgs = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": first}]
    status, _, three = post(server.url + "/", {"prompt": "再见", "history": msgs, "max_length": 16,
                                               "temperature": 0})
    assert status == 200 and three["response"] == two["response"]
    assert three["history"][-1] == {"role": "assistant", "content": two["response"]}
    expected = chat(server, msgs + [{"role": "user", "content": "再见"}], max_tokens=16)
    assert two["response"] == expected["choices"][0]["message"]["content"]


def test_follow_up_reuses_the_cache(server):
    """A chat turn that extends the previous prompt prefills only its new tokens (seen in the request log)."""
    first = [{"role": "user", "content": "tell me a story"}]
    answer = chat(server, first)["choices"][0]["message"]["content"]
    before = server.log_text().count("\n")
    chat(server, first + [{"role": "assistant", "content": answer}, {"role": "user", "content": "and then?"}])
    time.sleep(0.1)
    line = [l for l in server.log_text().splitlines()[before:] if "/v1/chat/completions" in l][-1]
    prompt, new = map(int, re.search(r"prompt (\d+) \((\d+) new\)", line).groups())
    assert new < prompt, line


# ---- streaming ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("accept_gzip", [False, True])
def test_chat_stream_events(server, accept_gzip):
    body = {"messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 24, "seed": 5, **VARIED}
    status, headers, chunks = sse_request(server, "/v1/chat/completions", body, accept_gzip=accept_gzip)
    assert status.endswith("200 OK")
    assert headers["content-type"] == "text/event-stream"
    assert "content-encoding" not in headers  # never compressed, even when the client accepts gzip
    assert headers["transfer-encoding"] == "chunked"
    # Every event goes out in its own chunk as soon as it is ready (a buffering or compressing server
    # would send a few large chunks at the end).
    for _, data in chunks:
        assert data.startswith(b"data: ") and data.endswith(b"\n\n") and data.count(b"\n\n") == 1, data
    events = parse_events(b"".join(c for _, c in chunks))
    assert events[-1] == "[DONE]"
    objs = [json.loads(e) for e in events[:-1]]
    ids = {o["id"] for o in objs}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(o["object"] == "chat.completion.chunk" and o["model"] == "tiny-qwen2" for o in objs)
    assert objs[0]["choices"][0]["delta"]["role"] == "assistant"
    assert objs[0]["choices"][0]["finish_reason"] is None
    last = objs[-1]["choices"][0]
    assert last["delta"] == {} and last["finish_reason"] in ("stop", "length")
    middle = objs[1:-1]  # content deltas; pieces generated faster than they are sent go out together
    assert len(middle) >= 1 and all(o["choices"][0]["finish_reason"] is None for o in middle)
    text = "".join(o["choices"][0]["delta"]["content"] for o in middle)
    whole = chat(server, body["messages"], **{k: v for k, v in body.items() if k != "messages"})["choices"][0]
    assert text == whole["message"]["content"] and last["finish_reason"] == whole["finish_reason"]


def test_stream_arrives_incrementally(server):
    """With a long answer, the events are spread over the generation time instead of arriving in one burst.

    Greedy completion of this prompt repeats one token, so it runs until the context is full (about 1000
    tokens). Pieces generated faster than they are sent go out together, but a streaming server sends far more
    than the few chunks of one that buffers."""
    body = {"prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0}
    t0 = time.monotonic()
    _, headers, chunks = sse_request(server, "/v1/completions", body, accept_gzip=True)
    total = time.monotonic() - t0
    assert "content-encoding" not in headers and len(chunks) > 100, len(chunks)
    content_times = [t for t, _ in chunks[:-2]]
    assert content_times[-1] - content_times[0] > 0.25 * total, (content_times[-1] - content_times[0], total)


def test_completions_stream_and_usage(server):
    body = {"prompt": "The quick brown fox", "temperature": 0, "max_tokens": 16}
    status, _, whole = post(server.url + "/v1/completions", body)
    assert status == 200 and whole["object"] == "text_completion" and whole["id"].startswith("cmpl-")
    text, finish = stream_text(server, "/v1/completions", body)
    assert text == whole["choices"][0]["text"] and finish == whole["choices"][0]["finish_reason"]

    # stream_options.include_usage adds a chunk with empty choices and the token counts before [DONE].
    _, _, chunks = sse_request(server, "/v1/chat/completions",
                               {"messages": [{"role": "user", "content": "hi"}], "temperature": 0,
                                "max_tokens": 8, "stream_options": {"include_usage": True}})
    events = parse_events(b"".join(c for _, c in chunks))
    usage = json.loads(events[-2])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] <= 8


def test_openai_client(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny-qwen2"]
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a color."}]
    r = client.chat.completions.create(model="tiny-qwen2", messages=messages, max_tokens=20, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    stream = client.chat.completions.create(model="tiny-qwen2", messages=messages, max_tokens=20, temperature=0,
                                            stream=True)
    pieces, finish = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert "".join(pieces) == r.choices[0].message.content and finish == r.choices[0].finish_reason

    c = client.completions.create(model="tiny-qwen2", prompt="1, 2, 3,", max_tokens=12, temperature=0)
    streamed = "".join(x.choices[0].text for x in client.completions.create(
        model="tiny-qwen2", prompt="1, 2, 3,", max_tokens=12, temperature=0, stream=True) if x.choices)
    assert streamed == c.choices[0].text

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-qwen2", messages=messages, temperature=-1)
    assert "temperature" in str(e.value)


def test_sampling_with_seed_is_reproducible(server):
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 1.0, "top_p": 0.9, "top_k": 50,
            "min_p": 0.01, "presence_penalty": 0.5, "repetition_penalty": 1.1, "max_tokens": 16, "seed": 1234}
    a = chat(server, **body)["choices"][0]["message"]["content"]
    b = chat(server, **body)["choices"][0]["message"]["content"]
    assert a == b


def test_stop_strings(server):
    messages = [{"role": "user", "content": "Tell me about stop strings."}]
    varied = dict(VARIED, seed=3)
    full = chat(server, messages, max_tokens=40, **varied)["choices"][0]["message"]["content"]
    # A stop string from the middle of the greedy answer: printable ASCII, so it is the same in bytes and text.
    m = re.search(r"[!-~]{2,3}", full[4:])
    assert m, f"no ASCII run to use as a stop string in {full!r}"
    stop = m.group(0)
    cut = full.index(stop)
    for stops in (stop, [stop, "never-appears"]):
        out = chat(server, messages, max_tokens=40, stop=stops, **varied)
        assert out["choices"][0]["message"]["content"] == full[:cut]
        assert out["choices"][0]["finish_reason"] == "stop"
    text, finish = stream_text(server, "/v1/chat/completions",
                               {"messages": messages, "max_tokens": 40, "stop": [stop], **varied})
    assert text == full[:cut] and finish == "stop"


def test_stop_string_spanning_two_tokens(server):
    """A stop string made of the last byte of one generated token and the first of the next (found from the
    recorded greedy ids of the chat cases): the answer ends just before it, streaming or not."""
    import test_cli
    name = "tiny-qwen2"
    table, stops = test_cli.token_bytes(name), test_cli.stop_ids(name)
    for case in (c for c in test_cli.reference(name) if c["mode"] == "chat"):
        greedy = case["greedy_ids"]
        n = next((i for i, t in enumerate(greedy) if t in stops), len(greedy))
        if min(case["greedy_margins"][:n], default=0) <= 0.05:
            continue  # a near tie: the engine may part from the recorded ids
        pieces = [table[t] for t in greedy[:n]]
        text = b"".join(pieces)
        ends = [len(b"".join(pieces[:k + 1])) for k in range(len(pieces) - 1)]
        at = next((e - 1 for e in ends if all(32 <= b < 127 for b in text[e - 1:e + 1])
                   and text.find(text[e - 1:e + 1]) == e - 1), None)
        if at is None:
            continue
        stop, want = text[at:at + 2].decode(), text[:at].decode("utf-8", "replace")
        messages = [{"role": "user", "content": case["prompt"]}]
        out = chat(server, messages, max_tokens=n, stop=[stop])
        assert out["choices"][0]["message"]["content"] == want and out["choices"][0]["finish_reason"] == "stop"
        body = {"messages": messages, "max_tokens": n, "stop": [stop], "temperature": 0}
        assert stream_text(server, "/v1/chat/completions", body) == (want, "stop")
        return
    pytest.fail("no chat case has a clear greedy answer with a token boundary to put a stop string across")


@pytest.mark.parametrize("field, flag, value", [("repetition_penalty", "--repeat-penalty", 1.8),
                                                ("min_p", "--min-p", 0.2),
                                                ("presence_penalty", "--presence-penalty", 1.5)])
def test_sampling_fields_take_effect_as_in_the_cli(server, field, flag, value):
    """Each field changes the seeded answer, exactly as the same CLI flag does (one Sampler for both)."""
    messages = [{"role": "user", "content": "Tell me a long story about a dragon."}]
    base = {"temperature": 1.5, "top_k": 0, "top_p": 1, "seed": 77, "max_tokens": 24}
    plain = chat(server, messages, **base)["choices"][0]["message"]["content"]
    changed = chat(server, messages, **base, **{field: value})["choices"][0]["message"]["content"]
    assert changed != plain, f"{field} = {value} changed nothing"
    cli = cli_answer("-p", messages[0]["content"], "--temp", "1.5", "--top-k", "0", "--top-p", "1", "-s", "77",
                     "-n", "24", flag, str(value))
    assert changed + "\n" == cli


def test_n_outside_1_to_16_is_refused(server):
    for n in (0, -1, 17):
        status, _, out = post(server.url + "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "hi"}], "n": n})
        assert status == 400 and re.search(r"\bn\b", out["error"]["message"]), out
    status, _, out = post(server.url + "/v1/chat/completions",
                          {"messages": [{"role": "user", "content": "hi"}], "n": 2, "max_tokens": 4})
    assert status == 200 and [c["index"] for c in out["choices"]] == [0, 1], out


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory):
    """tiny-qwen3 with the real Qwen3 chat template (a <think> mode), exported."""
    import shutil
    folder = tmp_path_factory.mktemp("think") / "tiny-qwen3-think"
    shutil.copytree(os.path.join(ROOT, "test", "data", "tiny-qwen3"), folder)
    real = json.load(open(os.path.join(ROOT, "test", "data", "qwen-tokenizer", "tokenizer_config.json")))
    config = json.load(open(folder / "tokenizer_config.json"))
    config["chat_template"] = real["chat_template"]
    json.dump(config, open(folder / "tokenizer_config.json", "w"))
    out = str(folder) + ".bin"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export.py"), str(folder), out], check=True,
                   capture_output=True)
    return out


def test_enable_thinking_through_chat_template_kwargs(thinking_model):
    """vLLM's chat_template_kwargs.enable_thinking (and the plain field) give the --no-think prompt of the CLI."""
    def tokens(*args):
        out = subprocess.run([CLI, "-m", thinking_model, "--tokenize", *args], capture_output=True, check=True)
        return len(out.stdout.split())
    s = Server("thinking", model=thinking_model)
    try:
        messages = [{"role": "user", "content": "hi"}]
        usage = lambda **kw: chat(s, messages, max_tokens=1, **kw)["usage"]["prompt_tokens"]
        assert usage() == tokens("-p", "hi")
        assert usage(chat_template_kwargs={"enable_thinking": False}) == tokens("--no-think", "-p", "hi")
        assert usage(enable_thinking=False) == tokens("--no-think", "-p", "hi")
        assert usage(chat_template_kwargs={"enable_thinking": True}) == tokens("-p", "hi")
        assert tokens("--no-think", "-p", "hi") > tokens("-p", "hi")
    finally:
        assert s.stop() == 0


# ---- concurrency ----------------------------------------------------------------------------------------------------

def test_parallel_clients_get_their_own_answers(server):
    prompts = [f"Question number {i}: what is {i} plus {i}?" for i in range(8)]
    def params(i):
        return dict(VARIED, seed=100 + i, max_tokens=24)

    serial = [chat(server, [{"role": "user", "content": p}], **params(i))["choices"][0]["message"]["content"]
              for i, p in enumerate(prompts)]
    assert len(set(serial)) == 8, "each client should have its own answer"
    results = [None] * 8

    def client(i):
        msgs = [{"role": "user", "content": prompts[i]}]
        if i % 2:
            results[i] = stream_text(server, "/v1/chat/completions", {"messages": msgs, **params(i)})[0]
        else:
            results[i] = chat(server, msgs, **params(i))["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == serial


def open_stream(port, path, body):
    """POSTs a streaming request on a raw socket and returns the socket once three events have arrived (the
    caller hangs up on it, as a client that goes away mid-answer does)."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    received = b""
    while received.count(b"data: ") < 3:
        received += sock.recv(4096)
    return sock


def test_client_disconnect_does_not_stall(server):
    """A client that hangs up mid-stream: its generation is cancelled and the next request is served at once."""
    sock = open_stream(server.port, "/v1/chat/completions",
                       {"messages": [{"role": "user", "content": "Write a very long essay."}],
                        "temperature": 0, "max_tokens": 100000, "stream": True})
    sock.close()
    t0 = time.time()
    out = chat(server, [{"role": "user", "content": "hi"}], max_tokens=8)
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    assert time.time() - t0 < 10
    # The abandoned stream ended early: cancelled when a write failed, well before the context was full.
    deadline = time.time() + 5
    while "client disconnected" not in server.log_text() and time.time() < deadline:
        time.sleep(0.05)
    assert "client disconnected" in server.log_text()


# ---- errors ----------------------------------------------------------------------------------------------------------

def error_of(status_and_body, status):
    got, _, body = status_and_body
    assert got == status, body
    assert set(body["error"]) == {"message", "type", "code", "param"}, body
    return body["error"]["message"]


def test_error_responses(server):
    u = server.url
    chat_url = u + "/v1/chat/completions"
    ok = [{"role": "user", "content": "hi"}]
    assert "JSON" in error_of(post(chat_url, b'{"messages": ['), 400)
    assert "JSON object" in error_of(post(chat_url, b'[1, 2]'), 400)
    assert "messages" in error_of(post(chat_url, {}), 400)
    assert "messages" in error_of(post(chat_url, {"messages": "hi"}), 400)
    assert "role" in error_of(post(chat_url, {"messages": [{"role": "robot", "content": "x"}]}), 400)
    assert "max_tokens" in error_of(post(chat_url, {"messages": ok, "max_tokens": "many"}), 400)
    assert "max_tokens" in error_of(post(chat_url, {"messages": ok, "max_tokens": 0}), 400)
    assert "'max_completion_tokens' must be at least 1" in error_of(
        post(chat_url, {"messages": ok, "max_completion_tokens": 0}), 400)
    assert "temperature must be" in error_of(post(chat_url, {"messages": ok, "temperature": -1}), 400)
    assert "top_p must be" in error_of(post(chat_url, {"messages": ok, "top_p": 1.5}), 400)
    assert "presence_penalty" in error_of(post(chat_url, {"messages": ok, "presence_penalty": 3}), 400)
    assert "stop" in error_of(post(chat_url, {"messages": ok, "stop": [1]}), 400)
    assert "UTF-8" in error_of(post(chat_url, b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}'), 400)
    assert "prompt" in error_of(post(u + "/v1/completions", {"max_tokens": 3}), 400)
    assert "prompt" in error_of(post(u + "/", {"history": []}), 400)

    long_prompt = " ".join(f"w{i}" for i in range(1500))
    msg = error_of(post(u + "/v1/completions", {"prompt": long_prompt}), 400)
    m = re.search(r"prompt is (\d+) tokens; the context holds (\d+).* (\d+) tokens too long", msg)
    n, ctx, over = map(int, m.groups())
    assert ctx == CONTEXT and n > ctx and over == n + 1 - ctx

    too_big = json.dumps({"prompt": "x" * (1 << 20)}).encode()
    assert "too large" in error_of(post(u + "/v1/completions", too_big), 413)
    assert "no such endpoint" in error_of(post(u + "/v2/nothing", {}), 404)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(u + "/v1/chat/completions", timeout=10)
    assert e.value.code == 405 and "error" in json.loads(e.value.read())
    # The server still works after all of that.
    assert chat(server, ok, max_tokens=4)["choices"][0]["finish_reason"] in ("stop", "length")


def test_command_line_errors():
    def run(*args):
        return subprocess.run([SERVER, *args], capture_output=True, timeout=30)

    assert run("-h").returncode == 0 and b"usage" in run("-h").stdout
    cases = [
        (["--bogus"], "unknown option --bogus"),
        (["-m", MODEL, "--bogus"], "unknown option --bogus"),
        (["-m", MODEL, "stray"], "unexpected argument 'stray'"),
        ([], "-m weights.bin is required"),
        (["-m", MODEL, "--port", "http"], "--port expects an integer"),
        (["-m", MODEL, "--temp"], "--temp needs a value"),
        (["-m", MODEL, "--temp", "1e39"], "--temp is out of range, got '1e39'"),
        (["-m", MODEL, "--top-p", "2", "--cpu"], "top_p must be in (0, 1], got 2"),
        (["-m", MODEL, "-c", "4096", "--cpu"], "larger than the model's max_seq_len of 1024"),
    ]
    for args, msg in cases:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        # one line: what is wrong, and where the options are listed
        assert re.fullmatch(rb"qwen-server: error: .* \(see qwen-server -h\)\n", r.stderr), (args, r.stderr)
        assert msg.encode() in r.stderr, (args, r.stderr)
    r = run("-m", os.path.join(ROOT, "build", "no-such-file.bin"))
    assert r.returncode == 1 and r.stderr.startswith(b"qwen-server: error: ") and b"no-such-file.bin" in r.stderr


def test_error_messages_quote_what_the_client_sent(server):
    chat_url = server.url + "/v1/chat/completions"
    ok = [{"role": "user", "content": "hi"}]
    # the value as given, not as clamped or narrowed to a float
    assert "got -2" in error_of(post(chat_url, {"messages": ok, "top_k": -2}), 400)
    msg = error_of(post(chat_url, {"messages": ok, "temperature": 1e308}), 400)
    assert "temperature" in msg and "1e+308" in msg and "inf" not in msg, msg
    msg = error_of(post(chat_url, {"messages": ok, "top_p": -1e300}), 400)
    assert "top_p" in msg and "-1e+300" in msg, msg
    # vLLM's -1 still means "off"
    assert chat(server, ok, max_tokens=2, top_k=-1)["choices"][0]["finish_reason"] in ("stop", "length")
    # POST / takes max_length; its errors name that field
    msg = error_of(post(server.url + "/", {"prompt": "hi", "max_length": 0}), 400)
    assert "'max_length' must be at least 1" in msg, msg
    msg = error_of(post(server.url + "/", {"prompt": "hi", "max_length": "long"}), 400)
    assert "max_length" in msg and "max_tokens" not in msg, msg


def test_form_encoded_body(server):
    """curl -d without a Content-Type header sends application/x-www-form-urlencoded: refused with 415 and the
    header to send (a page on another site can POST a form or text/plain without a CORS preflight; JSON needs
    one). Over --max-body the message gives the limit whatever the content type."""
    small = {"prompt": "hi", "max_tokens": 2, "temperature": 0}
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"):
        msg = error_of(post(server.url + "/v1/completions", small, headers={"Content-Type": content_type}), 415)
        assert "Content-Type: application/json" in msg and content_type in msg, msg
    status, _, out = post(server.url + "/v1/completions", small, headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200, out
    huge = json.dumps({"prompt": "x" * (1 << 20)}).encode()
    for headers in (None, {"Content-Type": "application/x-www-form-urlencoded"}):
        msg = error_of(post(server.url + "/v1/completions", huge, headers=headers), 413)
        assert "the limit is 1048576 bytes" in msg, msg


def test_busy_port_is_an_error(server):
    """A second server on a port in use fails (no SO_REUSEPORT sharing of the first one's connections)."""
    r = subprocess.run([SERVER, "-m", MODEL, "--cpu", "--port", str(server.port)], capture_output=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert f"qwen-server: error: cannot listen on 127.0.0.1:{server.port}: Address already in use".encode() \
        in r.stderr, r.stderr
    assert get_json(server.url + "/health")["status"] == "ok"


def test_full_queue_answers_503():
    """With --max-queue 1, requests beyond the running one and one waiting are refused at once with 503, and
    /health still answers during the flood."""
    s = Server("busy", "--max-queue", "1")
    try:
        body = {"prompt": "Once upon a time", "temperature": 0, "max_tokens": 1000}
        results = [None] * 12
        start = threading.Barrier(len(results) + 1)

        def client(i):
            start.wait()
            t0 = time.monotonic()
            status, _, out = post(s.url + "/v1/completions", body)
            results[i] = (status, out, time.monotonic() - t0)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(results))]
        for t in threads:
            t.start()
        start.wait()
        assert get_json(s.url + "/health")["status"] == "ok"
        for t in threads:
            t.join(120)
        statuses = [r[0] for r in results]
        assert set(statuses) <= {200, 503}, results
        assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
        for status, out, _ in results:
            if status == 503:
                assert out["error"]["code"] == "server_busy" and "busy" in out["error"]["message"], out
        assert "503" in s.log_text()
    finally:
        assert s.stop() == 0, s.log_text()


def test_sigterm_lets_a_running_stream_finish():
    s = Server("shutdown")
    try:
        result = {}

        def client():
            result["text"] = stream_text(s, "/v1/chat/completions",
                                         {"messages": [{"role": "user", "content": "hi"}], "temperature": 0,
                                          "max_tokens": 200})

        t = threading.Thread(target=client)
        t.start()
        time.sleep(0.05)
        t0 = time.time()
        status = s.stop()
        t.join(10)
        assert status == 0, s.log_text()
        assert time.time() - t0 < 12
        assert "text" in result  # the stream ended properly ([DONE] checked by stream_text)
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
