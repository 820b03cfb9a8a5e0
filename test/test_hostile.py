"""qwen-server and qwen under hostile input: no request crashes the server, none takes more memory or time
than its limits allow, and each is refused with the documented status.

Every attack runs against a fresh server on loopback, bounded in bytes and time. While it runs, a prober asks
GET /health every 0.1 s and the server's resident memory is sampled; afterwards the server must be alive,
every /health must have answered within 1 s, and the memory must have grown by less than RSS_BOUND_MB.
"""
import gzip
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from test_server import CLI, MODEL, ROOT, SERVER, Server, error_of, get_json, post

RSS_BOUND_MB = 100  # growth of the server's resident memory allowed during one attack
HEALTH_SECONDS = 1.0  # /health must answer within this, throughout
BUILD = Path(ROOT) / "build"
TMP = BUILD / "tmp-hostile"
REAL_TOKENIZER = BUILD / "qwen-tokenizer.bin"


# ---- watching the server during an attack ------------------------------------------------------------------

def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Watch:
    """Probes /health and samples memory in a thread while an attack runs."""

    def __init__(self, server):
        self.server = server
        self.stop = threading.Event()
        self.slowest = 0.0
        self.failures = []
        self.base_kb = rss_kb(server.proc.pid)
        self.peak_kb = self.base_kb
        # VmHWM catches peaks between samples; writing 5 to clear_refs resets it (Linux >= 4.0).
        try:
            with open(f"/proc/{server.proc.pid}/clear_refs", "w") as f:
                f.write("5")
            self.hwm = True
        except OSError:
            self.hwm = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.server.port), timeout=HEALTH_SECONDS) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    reply = b""
                    while chunk := s.recv(4096):
                        reply += chunk
                if b'{"status":"ok"' not in reply:
                    self.failures.append(reply[:200])
            except OSError as e:
                self.failures.append(repr(e))
            self.slowest = max(self.slowest, time.monotonic() - t0)
            try:
                self.peak_kb = max(self.peak_kb, rss_kb(self.server.proc.pid))
            except OSError:
                pass
            self.stop.wait(0.1)

    def finish(self):
        self.stop.set()
        self.thread.join()
        if self.hwm:
            self.peak_kb = max(self.peak_kb, rss_kb(self.server.proc.pid, "VmHWM"))
        return self


@contextmanager
def attack(server, rss_bound_mb=RSS_BOUND_MB):
    """Runs the body as an attack on `server` and checks the server came through it."""
    w = Watch(server)
    try:
        yield w
    finally:
        w.finish()
    assert server.proc.poll() is None, "the server died:\n" + server.log_text()[-3000:]
    assert not w.failures, f"/health failed during the attack: {w.failures[:3]}"
    assert w.slowest < HEALTH_SECONDS, f"/health took {w.slowest:.2f} s during the attack"
    grown_mb = (w.peak_kb - w.base_kb) / 1024
    assert grown_mb < rss_bound_mb, f"the server's memory grew by {grown_mb:.0f} MB (bound {rss_bound_mb} MB)"
    assert get_json(server.url + "/health")["status"] == "ok"


@pytest.fixture(scope="module")
def server():
    s = Server("hostile", "-t", "1")
    yield s
    assert s.stop() == 0, "qwen-server did not exit cleanly on SIGTERM:\n" + s.log_text()[-3000:]


# ---- raw HTTP ------------------------------------------------------------------------------------------------

def raw(server, data, timeout=30):
    """Sends bytes on a fresh connection and returns everything the server sends back until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:  # the server may answer and close before taking it all
            pass
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except OSError:
            pass
    return reply


def status_of(reply):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    assert m, reply[:300]
    return int(m.group(1))


def body_of(reply):
    return reply.split(b"\r\n\r\n", 1)[1]


def request(path, body=b"", headers=(), method="POST", version="HTTP/1.1"):
    head = f"{method} {path} {version}\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if body is not None and method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    for h in headers:
        head += h + "\r\n"
    return head.encode() + b"\r\n" + (body or b"")


def chunked(data, piece=65536):
    out = bytearray()
    for i in range(0, len(data), piece):
        part = data[i:i + piece]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return bytes(out) + b"0\r\n\r\n"


# ---- 1. deep JSON ----------------------------------------------------------------------------------------------

def nested(n):
    """n arrays, one inside the other."""
    return "[" * n + "]" * n


def test_deeply_nested_json_is_refused_for_every_field(server):
    n = 200000
    bodies = [  # each about 400-750 KB, under the 1 MB body limit
        ("/v1/completions", '{"prompt":' + nested(n) + "}"),
        ("/v1/chat/completions", '{"messages":[{"role":"user","content":"hi"}],"stop":' + nested(n) + "}"),
        ("/v1/chat/completions", '{"messages":[{"role":"user","content":' + nested(n) + "}]}"),
        ("/", '{"prompt":"hi","history":[{"role":"user","content":"x","extra":' + nested(100000) + "}]}"),
        ("/v1/completions", '{"prompt":"hi","ignored":' + '{"a":' * 150000 + "1" + "}" * 150000 + "}"),
    ]
    with attack(server):
        for path, body in bodies:
            msg = error_of(post(server.url + path, body.encode()), 400)
            assert "deeper than 64 levels" in msg, msg
    # The limit is 64 levels in all: the body object and 63 inside it pass, 64 inside it do not.
    ok = {"prompt": "hi", "max_tokens": 2, "ignored": json.loads(nested(63))}
    status, _, out = post(server.url + "/v1/completions", ok)
    assert status == 200, out
    ok["ignored"] = json.loads(nested(64))
    assert "deeper than 64" in error_of(post(server.url + "/v1/completions", ok), 400)
    # Brackets inside strings are text, not nesting.
    status, _, out = post(server.url + "/v1/completions", {"prompt": "[" * 1000 + '\\"{', "max_tokens": 2})
    assert status == 200, out


# ---- 2, 3. body limits over every transfer and content encoding ----------------------------------------------

def test_chunked_body_over_the_limit_gets_413(server):
    big = json.dumps({"prompt": "x " * (5 << 20)}).encode()  # 10 MB
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    with attack(server):
        reply = raw(server, head + chunked(big))
        assert status_of(reply) == 413, reply[:300]
        assert b"the limit is 1048576 bytes" in reply
    # A chunked body within the limit is read as any other.
    small = json.dumps({"prompt": "hi", "max_tokens": 2}).encode()
    reply = raw(server, head + chunked(small, piece=5))
    assert status_of(reply) == 200 and b'"text_completion"' in reply, reply[:300]


def test_content_length_over_the_limit_gets_413_without_reading_it(server):
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\nExpect: 100-continue\r\n\r\n")
    with attack(server):
        reply = raw(server, head)
    assert status_of(reply) == 413 and b"100 Continue" not in reply, reply[:300]


def gzip_bomb(inflated_mb):
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    zeros = b"\0" * (1 << 20)
    out = z.compress(b'{"prompt": "') + b"".join(z.compress(zeros) for _ in range(inflated_mb))
    return out + z.compress(b'"}') + z.flush()


def test_compressed_bodies_are_refused(server):
    bomb = gzip_bomb(200)  # ~200 KB that would inflate to 200 MB
    assert len(bomb) < 400 << 10
    with attack(server):
        for encoding in ("gzip", "deflate", "br", "GZIP"):
            reply = raw(server, request("/v1/completions", bomb, [f"Content-Encoding: {encoding}"]))
            assert status_of(reply) == 415 and b"compressed request bodies are not accepted" in reply, reply[:300]
    small = gzip.compress(json.dumps({"prompt": "hi"}).encode())
    reply = raw(server, request("/v1/completions", small, ["Content-Encoding: gzip"]))
    assert status_of(reply) == 415


# ---- 4. what the HTTP library must bound -------------------------------------------------------------------

def test_long_header_line_gets_431(server):
    with attack(server):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: ")
            sent, reply = 0, b""
            try:
                while sent < 64 << 20 and not reply:  # the server must answer long before 64 MB
                    s.sendall(b"a" * (1 << 16))
                    sent += 1 << 16
                    s.settimeout(0.001)
                    try:
                        reply = s.recv(65536)
                    except (socket.timeout, BlockingIOError):
                        pass
                    s.settimeout(30)
            except OSError:  # reset after the answer
                pass
            s.settimeout(5)
            try:
                while chunk := s.recv(65536):
                    reply += chunk
            except OSError:
                pass
    assert sent <= 1 << 20, f"the server read {sent} bytes of one header line"
    assert status_of(reply) == 431, reply[:300]


def test_many_headers_and_long_request_line(server):
    with attack(server):
        many = "".join(f"X-H{i}: {i}\r\n" for i in range(5000)).encode()
        reply = raw(server, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
        assert status_of(reply) == 431, reply[:300]
        reply = raw(server, b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_of(reply) == 414, reply[:300]
    # A request with ordinary headers (a few KB of cookies) is served.
    cookies = "Cookie: " + "; ".join(f"c{i}={'v' * 40}" for i in range(100))
    reply = raw(server, request("/health", method="GET", body=None, headers=[cookies]))
    assert status_of(reply) == 200


def test_range_requests_get_the_whole_page(server):
    size = len(body_of(raw(server, request("/", method="GET", body=None))))
    assert size > 1000
    ranges = "Range: bytes=" + ",".join(["0-"] * 2700)
    with attack(server):
        replies = []

        def client():
            replies.append(raw(server, request("/", method="GET", body=None, headers=[ranges])))

        threads = [threading.Thread(target=client) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(replies) == 16
    for reply in replies:
        assert status_of(reply) == 200 and len(body_of(reply)) == size, (reply[:300], size)


def slow_clients(server, n, stop, prefix=b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", interval=2.0):
    """n connections that send `prefix`, then one byte every `interval` seconds until `stop` is set."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(prefix)
        socks.append(s)

    def trickle():
        while not stop.wait(interval):
            for s in socks:
                try:
                    s.send(b"a")
                except OSError:
                    pass

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    return socks, t


def closed_by_server(socks):
    """How many of the sockets the server has closed (end of stream or reset waiting to be read)."""
    readable, _, _ = select.select(socks, [], [], 0)
    closed = 0
    for s in readable:
        try:
            closed += s.recv(65536, socket.MSG_PEEK) == b""
        except OSError:
            closed += 1
    return closed


def test_slow_clients_do_not_block_health_and_are_cut_at_the_deadline():
    """70 clients sending their headers a byte at a time: /health answers throughout, and each of them is
    cut when its request has not arrived whole within --timeout (3 s here), though it never stops sending."""
    s = Server("hostile-slow", "-t", "1", "--timeout", "3")
    stop = threading.Event()
    try:
        with attack(s):
            socks, t = slow_clients(s, 70, stop, interval=0.5)
            time.sleep(2)
            assert closed_by_server(socks) == 0, "a slow request was cut before its deadline"
            time.sleep(3)
            closed = closed_by_server(socks)
            stop.set()
            t.join()
        assert closed == 70, f"{70 - closed} of 70 slow requests were still open 5 s on (--timeout 3)"
        for sock in socks:
            sock.close()
    finally:
        stop.set()
        assert s.stop() == 0, s.log_text()[-3000:]


def test_connections_beyond_the_limit_are_refused():
    s = Server("hostile-connections", "--max-connections", "4")
    try:
        held = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(4)]
        time.sleep(0.3)
        t0 = time.monotonic()
        reply = raw(s, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", timeout=5)
        assert reply == b"" and time.monotonic() - t0 < 1, reply  # closed at once, not left waiting
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert status_of(raw(s, request("/health", method="GET", body=None))) == 200
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]


def test_sigterm_ends_the_server_whatever_clients_do():
    """Clients trickling header bytes, clients trickling a body, an idle keep-alive connection and one not
    reading a long stream: SIGTERM still ends the server within the grace period, with exit status 0."""
    s = Server("hostile-sigterm", "-t", "1")
    stop = threading.Event()
    try:
        trickling, _ = slow_clients(s, 2, stop, interval=0.5)
        body_head = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        uploading, _ = slow_clients(s, 2, stop, prefix=body_head, interval=0.5)
        idle = socket.create_connection(("127.0.0.1", s.port))
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        idle.recv(4096)
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", s.port))
        stuck.sendall(request("/v1/completions", json.dumps({"prompt": "Once upon a time", "max_tokens": 1000,
                                                             "temperature": 0, "stream": True}).encode()))
        time.sleep(1)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        status = s.proc.wait(20)
        took = time.monotonic() - t0
        assert status == 0, s.log_text()[-3000:]
        assert took < 8, f"shutdown took {took:.1f} s"
        for sock in trickling + uploading + [idle, stuck]:
            sock.close()
    finally:
        stop.set()
        if s.proc.poll() is None:
            s.proc.kill()
        s.log.close()


def quiet_post(*args, **kw):
    try:
        return post(*args, **kw)
    except OSError as e:  # the server went away
        return (None, None, repr(e))


def test_second_signal_exits_at_once():
    s = Server("hostile-second-signal", "-t", "1", "--max-queue", "64")
    try:
        body = {"prompt": "Once upon a time", "max_tokens": 1000, "temperature": 0}
        threads = [threading.Thread(target=quiet_post, args=(s.url + "/v1/completions", body),
                                    kwargs={"timeout": 30}, daemon=True) for _ in range(40)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGINT)
        status = s.proc.wait(10)
        assert time.monotonic() - t0 < 2 and status == 1, (status, s.log_text()[-2000:])
        assert "second signal, exiting now" in s.log_text()
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
        s.log.close()


# ---- 5. NFC on long runs of combining marks ------------------------------------------------------------------

def test_alternating_combining_marks_are_fast(server):
    text = "\u0301\u0316" * 80000  # 320 KB
    with attack(server):
        t0 = time.monotonic()
        status, _, out = post(server.url + "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": text}], "max_tokens": 2})
        took = time.monotonic() - t0
    assert status == 400 and "too long" in out["error"]["message"], out  # 160k marks do not fit 1024 tokens
    assert took < 2, f"a 320 KB message of combining marks took {took:.1f} s"


def test_cli_tokenizes_80k_alternating_marks_in_well_under_a_second():
    if not REAL_TOKENIZER.exists():
        pytest.skip("needs build/qwen-tokenizer.bin (make fixtures)")
    TMP.mkdir(parents=True, exist_ok=True)
    marks = TMP / "marks.txt"
    marks.write_text("\u0301\u0316" * 40000, encoding="utf-8")
    plain = TMP / "plain.txt"
    plain.write_text("hi", encoding="utf-8")

    def seconds(path):
        t0 = time.monotonic()
        p = subprocess.run([CLI, "-m", REAL_TOKENIZER, "--tokenize", "--raw", "-f", path], capture_output=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        return time.monotonic() - t0, p.stdout

    load, _ = seconds(plain)
    took, out = seconds(marks)
    assert len(out.split()) > 1000
    assert took - load < 0.5, f"80k alternating marks took {took - load:.2f} s beyond loading the tokenizer"


# ---- 6, 7. the queue ---------------------------------------------------------------------------------------------

def test_max_queue_0_means_one_running_and_none_waiting():
    s = Server("hostile-queue0", "-t", "1", "--max-queue", "0")
    try:
        body = {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}
        for _ in range(3):  # an idle server takes each request
            status, _, out = post(s.url + "/v1/completions", body)
            assert status == 200, out
        long = dict(body, max_tokens=1000)
        results = []
        start = threading.Barrier(6)

        def client():
            start.wait()
            results.append(post(s.url + "/v1/completions", long)[0])

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results.count(200) >= 1 and results.count(503) >= 1 and set(results) <= {200, 503}, results
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]


def test_requests_queued_at_shutdown_get_503():
    """Jobs still waiting when the grace period ends are answered 503 "shutting down" (a stream: an error
    event, then [DONE]), never 200 with an empty answer; the running one ends with what it has."""
    # a short grace (1 s, the default is 5) so that jobs are still queued when it ends however fast the machine
    s = Server("hostile-queued", "-t", "1", "--max-queue", "64", "--shutdown-grace", "1")
    try:
        body = {"prompt": "Once upon a time", "max_tokens": 1000, "temperature": 0}
        results = []

        def client(stream):
            if stream:  # HTTP/1.0: the events come unframed, up to the end of the connection
                payload = json.dumps(dict(body, stream=True)).encode()
                results.append(("stream", raw(s, request("/v1/completions", payload, version="HTTP/1.0"), 60)))
            else:
                results.append(("whole", quiet_post(s.url + "/v1/completions", body, timeout=60)))

        threads = [threading.Thread(target=client, args=(i % 4 == 3,)) for i in range(40)]
        for t in threads:
            t.start()
        time.sleep(1)
        s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert s.proc.wait(15) == 0, s.log_text()[-3000:]
        assert len(results) == 40
        refused = 0
        for kind, r in results:
            if kind == "whole":
                status, _, out = r
                assert status in (200, 503), out
                if status == 503:
                    assert out["error"]["code"] == "shutting_down", out
                    refused += 1
                else:
                    assert out["usage"]["completion_tokens"] > 0 and out["choices"][0]["text"], out
            else:
                assert status_of(r) == 200 and r.endswith(b"data: [DONE]\n\n"), r[-300:]
                refused += b'"shutting_down"' in r
        assert refused > 0, "nothing was still queued at the end of the grace period"
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
        s.log.close()


# ---- 8, 11. request fields ------------------------------------------------------------------------------------------

def test_wrong_typed_fields_get_400(server):
    chat_url = server.url + "/v1/chat/completions"
    with attack(server):
        for part in ({"type": 1, "text": "x"}, {"type": "text", "text": 1}, {"type": None}, {"text": "x"}, 5,
                     {"type": "image_url", "image_url": {"url": "x"}}):
            msg = error_of(post(chat_url, {"messages": [{"role": "user", "content": [part]}]}), 400)
            assert "only text content parts" in msg, msg
        for bad in ({"role": 1}, {"role": "user", "content": 5}, {"role": "user", "content": {"a": 1}}):
            error_of(post(chat_url, {"messages": [bad]}), 400)
        for field, value in (("max_tokens", [1]), ("stream", "yes"), ("seed", "1"), ("temperature", {}),
                             ("stop", {"a": 1}), ("n", 1.5), ("top_k", 0.5)):
            msg = error_of(post(chat_url, {"messages": [{"role": "user", "content": "hi"}], field: value}), 400)
            assert field in msg, msg
        error_of(post(server.url + "/", {"prompt": "hi", "history": [{"role": "user", "content": [1]}]}), 400)
        error_of(post(server.url + "/", {"prompt": "hi", "history": "x"}), 400)


def test_seeds_take_64_bits_like_the_cli(server):
    if not os.path.exists(CLI):
        pytest.skip("./qwen not built")
    chat_url = server.url + "/v1/chat/completions"
    varied = {"temperature": 10, "top_k": 0, "top_p": 1, "min_p": 0, "max_tokens": 12}
    for seed in (2 ** 53 + 1, 2 ** 64 - 1):
        status, _, out = post(chat_url, {"messages": [{"role": "user", "content": "hi"}], "seed": seed, **varied})
        assert status == 200, out
        cli = subprocess.run([CLI, "-m", MODEL, "--cpu", "-p", "hi", "-n", "12", "-s", str(seed), "--temp", "10",
                              "--top-k", "0", "--top-p", "1"], capture_output=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert out["choices"][0]["message"]["content"] == cli.stdout.decode("utf-8", "replace")[:-1]
    msg = error_of(post(chat_url, {"messages": [{"role": "user", "content": "hi"}], "seed": 2 ** 64}), 400)
    assert "seed" in msg, msg


def test_sampling_errors_quote_the_value_sent(server):
    chat_url = server.url + "/v1/chat/completions"
    ok = [{"role": "user", "content": "hi"}]
    msg = error_of(post(chat_url, {"messages": ok, "top_p": 1.0000001}), 400)
    assert msg == "top_p must be in (0, 1], got 1.0000001", msg
    msg = error_of(post(chat_url, {"messages": ok, "min_p": -1e-30}), 400)
    assert "min_p must be in [0, 1], got -1e-30" == msg, msg


# ---- 11. the rest of HTTP ------------------------------------------------------------------------------------------

def test_host_check(server):
    for host in ("evil.example", "127.0.0.1.evil.example", "localhost.evil.example:80", "[::2]", "x:y"):
        reply = raw(server, b"GET /health HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
        assert status_of(reply) == 403 and b"host_not_allowed" in reply, (host, reply[:300])
    for host in ("127.0.0.1", f"127.0.0.1:{server.port}", "localhost", f"LOCALHOST:{server.port}", "[::1]:1",
                 "127.1.2.3", "app.localhost"):
        reply = raw(server, b"GET /health HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
        assert status_of(reply) == 200, (host, reply[:300])
    # HTTP/1.1 needs a Host; HTTP/1.0 may go without.
    assert status_of(raw(server, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")) == 400
    assert status_of(raw(server, b"GET /health HTTP/1.0\r\n\r\n")) == 200


def test_allow_host_adds_names():
    s = Server("hostile-allow-host", "--allow-host", "Model.Example")
    try:
        for host, status in (("model.example:8000", 200), ("other.example", 403), ("localhost", 200)):
            reply = raw(s, f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            assert status_of(reply) == status, (host, reply[:200])
    finally:
        assert s.stop() == 0


def test_http10_stream_is_not_chunked(server):
    payload = json.dumps({"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "stream": True}).encode()
    reply = raw(server, request("/v1/completions", payload, version="HTTP/1.0"))
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
    assert b"chunked" not in head.lower(), head
    assert body.startswith(b"data: ") and body.endswith(b"data: [DONE]\n\n"), body[-200:]


def test_pipelined_requests_are_all_answered(server):
    payload = json.dumps({"prompt": "hi", "max_tokens": 2, "temperature": 0}).encode()
    first = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    second = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    reply = raw(server, first + second)
    assert reply.count(b"HTTP/1.1 200") == 2 and b'{"status":"ok"' in reply.split(b"\r\n\r\n")[-1], reply[-300:]


def test_methods_and_paths(server):
    assert status_of(raw(server, request("/v1/completions", method="OPTIONS", body=None))) == 405
    reply = raw(server, request("/", method="HEAD", body=None))
    assert status_of(reply) == 200 and body_of(reply) == b""
    assert status_of(raw(server, request("/nope", b"{}"))) == 404
    assert status_of(raw(server, request("/health", b"{}"))) == 405
    # A refused request's body is read first, so that a client still sending sees the answer.
    big = b'{"x": "' + b"y" * (4 << 20) + b'"}'
    for path in ("/nope", "/health"):
        reply = raw(server, request(path, big))
        assert status_of(reply) in (404, 405), reply[:200]


# ---- 9, 10, 11. the command line and the weights file ----------------------------------------------------------

def measured(args, stdin=b"", timeout=60):
    """Runs a command; returns (exit status, stderr, seconds, peak resident memory in MB)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        p = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err)
        while True:  # reaped here, not by Popen, for the child's resource usage
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                p.kill()
            time.sleep(0.02)
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return p.returncode, err.read().decode("utf-8", "replace"), time.monotonic() - t0, usage.ru_maxrss / 1024


@pytest.fixture
def tmp():
    TMP.mkdir(parents=True, exist_ok=True)
    return TMP


def test_model_must_be_a_regular_file(tmp):
    fifo = tmp / "weights.fifo"
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)
    for path in (fifo, tmp, "/dev/null"):
        p = subprocess.run([CLI, "-m", path, "-p", "hi"], capture_output=True, timeout=10)
        assert p.returncode == 1 and b"not a regular file" in p.stderr, (path, p.stderr)
    p = subprocess.run([SERVER, "-m", fifo], capture_output=True, timeout=10)
    assert p.returncode == 1 and b"not a regular file" in p.stderr, p.stderr


def test_weights_must_end_with_the_last_tensor(tmp):
    bad = tmp / "trailing.bin"
    bad.write_bytes(Path(MODEL).read_bytes() + b"\0")
    p = subprocess.run([CLI, "-m", bad, "--cpu", "-p", "hi", "-n", "2"], capture_output=True, timeout=30)
    assert p.returncode == 1 and re.search(rb"1 unexpected bytes after tensor '\w+', which must end the file",
                                           p.stderr), p.stderr
    p = subprocess.run([SERVER, "-m", bad, "--cpu"], capture_output=True, timeout=30)
    assert p.returncode == 1 and b"unexpected bytes after tensor" in p.stderr, p.stderr
    tok = tmp / "tok-trailing.bin"
    tok.write_bytes((BUILD / "tokenizer-small.bin").read_bytes() + b"x")
    p = subprocess.run([CLI, "-m", tok, "--tokenize", "-p", "hi"], capture_output=True, timeout=30)
    assert p.returncode == 1 and b"1 unexpected bytes after the tensor table" in p.stderr, p.stderr


def test_interactive_takes_crlf_input():
    def chat(stdin):
        p = subprocess.run([CLI, "-m", MODEL, "--cpu", "-i", "-n", "8", "--temp", "0"], input=stdin,
                           capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout

    # One answer, to "hi" without its CR, then /exit: "never asked" is not answered.
    assert chat(b"hi\r\n/exit\r\nnever asked\r\n") == chat(b"hi\n")


def test_huge_prompt_file_is_refused_before_tokenizing(tmp):
    big = tmp / "64mib.txt"
    line = b"All work and no play makes Jack a dull boy. "
    big.write_bytes(line * ((64 << 20) // len(line)))
    try:
        code, err, took, peak_mb = measured([CLI, "-m", MODEL, "--cpu", "-f", big])
    finally:
        big.unlink()
    assert code == 1 and "more than the context of 1024" in err, err
    assert took < 3 and peak_mb < 400, f"{took:.1f} s, {peak_mb:.0f} MB"


def test_weights_replaced_while_served(tmp, monkeypatch):
    """mv over a served file is safe: the server keeps the file it mapped. Truncating it in place (what cp onto
    it does first) kills a CPU-engine server, which reads its weights from the file for every token, with a
    SIGBUS, explained in one line (the README says to replace a served file with mv)."""
    import test_server
    live = tmp / "live.bin"
    shutil.copy(MODEL, live)
    monkeypatch.setattr(test_server, "MODEL", str(live))
    s = Server("hostile-replace", "-t", "1")
    try:
        body = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
        before = post(s.url + "/v1/completions", body)[2]["choices"][0]["text"]
        other = tmp / "other.bin"
        shutil.copy(BUILD / "tiny-qwen15.bin", other)
        os.replace(other, live)
        status, _, out = post(s.url + "/v1/completions", body)
        assert status == 200 and out["choices"][0]["text"] == before
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]

    shutil.copy(MODEL, live)
    s = Server("hostile-truncate", "-t", "1")
    try:
        with open(live, "r+b") as f:
            f.truncate(0)
        try:
            post(s.url + "/v1/completions", body, timeout=10)
        except OSError:
            pass
        assert s.proc.wait(10) == -signal.SIGBUS
        assert "SIGBUS reading the weights file: it was truncated or rewritten in place" in s.log_text()
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
        s.log.close()


EMU = BUILD / "qwen-server_emu"
GPU_SERVER = Path(ROOT) / "qwen-server" if Path("/dev/nvidia0").exists() else EMU


@pytest.mark.skipif(not GPU_SERVER.exists(), reason="no GPU and no build/qwen-server_emu")
def test_gpu_server_lets_the_file_go(tmp, monkeypatch):
    """The GPU engine copies the weights to the device, and the server then unmaps the file: truncating it in
    place changes nothing."""
    import test_server
    live = tmp / "gpu-live.bin"
    shutil.copy(MODEL, live)
    monkeypatch.setattr(test_server, "MODEL", str(live))
    s = Server("hostile-gpu-truncate", binary=str(GPU_SERVER), cpu=False)
    try:
        body = {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}
        before = post(s.url + "/v1/completions", body, timeout=120)
        with open(live, "r+b") as f:
            f.truncate(0)
        after = post(s.url + "/v1/completions", body, timeout=120)
        assert before[0] == after[0] == 200 and before[2]["choices"] == after[2]["choices"]
    finally:
        assert s.stop(60) == 0, s.log_text()[-3000:]
