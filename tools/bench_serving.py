#!/usr/bin/env python3
"""Serving benchmark for qwen-server (or any server with the OpenAI streaming API).

N clients send M streamed requests in all (each client sends its next one as soon as its last one ends), every
one asking for exactly --max-tokens tokens ("ignore_eos": true), and the run is summed up as vLLM's serving
benchmark does: requests/s, output and total tok/s, time to first token (TTFT), time per output token after the
first (TPOT), inter-token latency (ITL: the gaps between streamed chunks that carry text, all requests pooled) and
end-to-end latency, each as mean, p50 (the median) and p99, and the failed requests with the first error. Each
request opens its own connection: TTFT and end-to-end latency count from before it is made.

Prompts are random words cut to exactly --prompt-tokens tokens with the server's POST /tokenize (without it, one
word per token, approximately), or the lines of --prompt-file in turn; prompt and output token counts are the
server's own (the usage chunk of stream_options.include_usage). Exit status: 0 when every request completed, 1
when any failed (the report is printed all the same), 2 for a mistake on the command line.

Python standard library only. Start the server first; its --max-queue (default 32) must let --clients requests
wait, or the extra ones get 503 and count as failures.

    ./qwen-server -m weights.bin --max-queue 64 &
    python3 tools/bench_serving.py --clients 8 --requests 64 --prompt-tokens 512 --max-tokens 128
    python3 tools/bench_serving.py --url http://host:6006 --endpoint /v1/chat/completions --json
"""
import argparse
import http.client
import json
import math
import os
import random
import socket
import sys
import threading
import time
import urllib.parse

# ---- statistics ----------------------------------------------------------------------------------------------


def percentile(values, p):
    """The p-th percentile (0..100) of values, interpolated linearly between the closest ranks (numpy's default):
    the sorted values sit at ranks 0..n-1 and the percentile at rank p/100 * (n-1)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {p}")
    v = sorted(values)
    rank = p / 100 * (len(v) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (rank - lo) * (v[hi] - v[lo])


def summary(values):
    """{"mean", "p50", "p99"} of values (None each when there are none)."""
    if not values:
        return {"mean": None, "p50": None, "p99": None}
    return {"mean": sum(values) / len(values), "p50": percentile(values, 50), "p99": percentile(values, 99)}


class Record:
    """One request as the client saw it: perf_counter() times in seconds, the server's token counts."""

    def __init__(self):
        self.start = None        # the request about to be sent (its connection not yet made)
        self.chunks = []         # arrival time of each event that carried text
        self.end = None          # arrival of data: [DONE]
        self.prompt_tokens = None      # from the usage chunk
        self.output_tokens = None      # from the usage chunk (else: the number of text chunks)
        self.error = None        # one line, or None when the request completed


def request_latencies(r):
    """A completed request's TTFT, end-to-end latency and TPOT (seconds; TPOT None for one token) and its
    inter-token gaps (the arrival gaps between its text chunks)."""
    ttft = r.chunks[0] - r.start
    e2e = r.end - r.start
    tpot = (e2e - ttft) / (r.output_tokens - 1) if r.output_tokens > 1 else None
    itl = [b - a for a, b in zip(r.chunks, r.chunks[1:])]
    return ttft, e2e, tpot, itl


def aggregate(records, duration):
    """The benchmark's figures from all records and the wall time of the run (seconds): counts, throughputs, and
    mean/p50/p99 of TTFT, TPOT, ITL and end-to-end latency in milliseconds."""
    done = [r for r in records if r.error is None]
    failed = [r for r in records if r.error is not None]
    ttft, e2e, tpot, itl = [], [], [], []
    for r in done:
        a, b, c, gaps = request_latencies(r)
        ttft.append(a * 1e3)
        e2e.append(b * 1e3)
        if c is not None:
            tpot.append(c * 1e3)
        itl.extend(g * 1e3 for g in gaps)
    prompt = sum(r.prompt_tokens or 0 for r in done)
    output = sum(r.output_tokens for r in done)
    out = {
        "completed": len(done),
        "failed": len(failed),
        "first_error": failed[0].error if failed else None,
        "duration_s": duration,
        "total_input_tokens": prompt,
        "total_output_tokens": output,
        "request_throughput": len(done) / duration if duration > 0 else None,
        "output_throughput": output / duration if duration > 0 else None,
        "total_token_throughput": (prompt + output) / duration if duration > 0 else None,
    }
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2e)):
        for stat, v in summary(values).items():
            out[f"{stat}_{name}_ms"] = v
    return out


# ---- the server ---------------------------------------------------------------------------------------------


class Target:
    """The server's address and credentials; each call opens its own connection."""

    def __init__(self, url, api_key, timeout):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"--url must be http://HOST[:PORT] or https://..., got {url!r}")
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.base = u.path.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def connect(self):
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def call(self, method, path, body=None):
        """A small JSON request: (status, parsed answer or None)."""
        conn = self.connect()
        try:
            conn.request(method, self.base + path, json.dumps(body) if body is not None else None, self.headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, None
        finally:
            conn.close()

    def describe(self, e):
        """One line for a failure to talk to the server."""
        where = f"{self.host}:{self.port}"
        if isinstance(e, ConnectionRefusedError):
            return f"connection refused by {where} (is the server running?)"
        if isinstance(e, (socket.timeout, TimeoutError)):
            return f"no answer from {where} within {self.timeout:g} s (--timeout)"
        if isinstance(e, socket.gaierror):
            return f"cannot resolve {self.host}: {e}"
        return f"{type(e).__name__} talking to {where}: {e}"


def server_message(answer, raw=b""):
    """The message of an error answer, OpenAI's {"error": {"message": ...}} (or {"error": "..."}), else the start
    of the raw body."""
    e = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(e, dict) and isinstance(e.get("message"), str):
        return e["message"]
    if isinstance(e, str):
        return e
    return raw[:200].decode("utf-8", "replace").strip() or "(no body)"


def probe(target):
    """(whether the server answers at all, the first model of its GET /v1/models or None)."""
    try:
        status, answer = target.call("GET", "/v1/models")
    except (OSError, http.client.HTTPException):
        return False, None
    try:
        return True, answer["data"][0]["id"] if status == 200 else None
    except (KeyError, IndexError, TypeError):
        return True, None


# ---- prompts --------------------------------------------------------------------------------------------------

# Common English words: each one token (with its leading space) in Qwen's vocabulary.
WORDS = ("the of and to in is was for on that with as by at from his it an were are which this be or has had not "
         "first one their its new after but who they have her she two been other when there all during into "
         "school time may years more most only over city some world would where later up such used many can state "
         "about national out known university united then made under while however through name film team year "
         "part both back since three well people around work including government between life best").split()


def token_prefix(target, text, n):
    """The text of the first n tokens of text by the server's POST /tokenize (llama-server's), with the number of
    tokens text has; None where the server has no /tokenize."""
    try:
        status, answer = target.call("POST", "/tokenize", {"content": text, "with_pieces": True})
        pieces = answer["tokens"] if status == 200 else None
    except (OSError, http.client.HTTPException, KeyError, TypeError):
        return None
    if not isinstance(pieces, list):
        return None
    out = b""
    for t in pieces[:n]:
        p = t.get("piece") if isinstance(t, dict) else None
        try:
            out += p.encode("utf-8") if isinstance(p, str) else bytes(p)  # a piece that is not whole characters
        except (AttributeError, TypeError, ValueError):                  # is a list of its bytes
            return None
    return out.decode("utf-8", "replace"), len(pieces)


def random_prompt(target, rng, n):
    """Random words making n tokens: cut at the n-th token where the server can tokenize, else n words (target
    None: do not ask)."""
    words = [rng.choice(WORDS) for _ in range(n)]
    while True:
        text = " ".join(words)
        cut = token_prefix(target, text, n) if target else None
        if cut is None:
            return text, False
        if cut[1] >= n:
            return cut[0], True
        words += [rng.choice(WORDS) for _ in range(n - cut[1])]


def make_prompts(args, target, reachable):
    """The M prompts: the lines of --prompt-file in turn, or random ones of --prompt-tokens tokens each (measured
    with the server's tokenizer when it answers)."""
    if args.prompt_file:
        return [args.prompt_lines[i % len(args.prompt_lines)] for i in range(args.requests)]
    rng = random.Random(args.seed)
    prompts, exact = [], True
    for _ in range(args.requests):
        text, ok = random_prompt(target if reachable else None, rng, args.prompt_tokens)
        prompts.append(text)
        exact = exact and ok
    if reachable and not exact:
        print("note: the server's POST /tokenize gave no tokens; prompt lengths are approximate (a word a token)",
              file=sys.stderr)
    return prompts


def request_body(args, model, prompt):
    body = {"max_tokens": args.max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    if model:
        body["model"] = model
    if args.endpoint.endswith("/chat/completions"):
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


# ---- one streamed request -----------------------------------------------------------------------------------


def carries_text(choice):
    """Whether a stream chunk's choice holds generated text: completions' "text", or chat's delta with content,
    reasoning or tool calls (chat's first chunk, the role with empty content, does not)."""
    if choice.get("text"):
        return True
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"))


def read_events(resp, r):
    """Reads the server-sent events of a 200 answer into r until data: [DONE]; returns an error line or None."""
    while True:
        line = resp.readline()
        now = time.perf_counter()
        if not line:
            return "the stream ended before data: [DONE]"
        line = line.strip()
        if not line.startswith(b"data:"):
            continue  # the blank line between events, comments, other fields
        data = line[len(b"data:"):].strip()
        if data == b"[DONE]":
            r.end = now
            return None
        try:
            event = json.loads(data)
        except ValueError:
            return f"a stream event is not JSON: {data[:120]!r}"
        if "error" in event:
            return "an error event in the stream: " + server_message(event, data)
        if any(carries_text(c) for c in event.get("choices") or []):
            r.chunks.append(now)
        usage = event.get("usage")
        if isinstance(usage, dict):
            r.prompt_tokens = usage.get("prompt_tokens")
            r.output_tokens = usage.get("completion_tokens")


def stream_request(target, path, body):
    """Sends one streamed request; a Record with its times, its token counts, or its error."""
    r = Record()
    conn = target.connect()
    payload = json.dumps(body).encode()
    try:
        r.start = time.perf_counter()
        conn.request("POST", target.base + path, payload, target.headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raw = resp.read()
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = None
            r.error = f"HTTP {resp.status}: {server_message(answer, raw)}"
            return r
        r.error = read_events(resp, r)
    except (OSError, http.client.HTTPException) as e:
        r.error = target.describe(e)
    finally:
        conn.close()
    if r.error is None and not r.chunks:
        r.error = "the stream held no text"
    if r.error is None and r.output_tokens is None:
        r.output_tokens = len(r.chunks)  # no usage chunk: one token per text chunk, approximately
    return r


# ---- the run ---------------------------------------------------------------------------------------------------


def run(target, path, bodies, clients):
    """Sends the bodies from `clients` threads, each taking the next one as soon as its last one ended; returns
    the records (in the order of bodies) and the wall time from the first send to the last answer."""
    records = [None] * len(bodies)
    lock = threading.Lock()
    todo = iter(range(len(bodies)))
    start = threading.Barrier(clients + 1)

    def client():
        start.wait()
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            records[i] = stream_request(target, path, bodies[i])

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return records, time.perf_counter() - t0


# ---- report ------------------------------------------------------------------------------------------------------


def print_report(m):
    def num(v, fmt):
        return format(v, fmt) if v is not None else "-"

    c = m["config"]
    prompts = f"prompts from {c['prompt_file']}" if c["prompt_file"] else f"{c['prompt_tokens']}-token prompts"
    print(f"{c['url']}{c['endpoint']} (model {c['model'] or '-'}): {c['requests']} requests, {c['clients']} clients, "
          f"{prompts}, {c['max_tokens']} max tokens")
    print(f"requests        {m['completed']} completed, {m['failed']} failed")
    print(f"duration        {m['duration_s']:.3f} s")
    print(f"tokens          {m['total_input_tokens']} prompt, {m['total_output_tokens']} generated")
    print(f"throughput      {num(m['request_throughput'], '.2f')} req/s, {num(m['output_throughput'], '.1f')} "
          f"output tok/s, {num(m['total_token_throughput'], '.1f')} total tok/s")
    print(f"{'latency (ms)':<16}{'mean':>10}{'p50':>10}{'p99':>10}")
    for name, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "end to end")):
        print(f"  {label:<14}" + "".join(f"{num(m[f'{s}_{name}_ms'], '10.2f'):>10}" for s in ("mean", "p50", "p99")))
    if m["first_error"]:
        print(f"first error     {m['first_error']}")


def positive(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:6006", help="the server (default: qwen-server's, %(default)s)")
    ap.add_argument("--endpoint", default="/v1/completions", choices=["/v1/completions", "/v1/chat/completions"],
                    help="the API to call (default %(default)s: the prompt as it is, no chat template)")
    ap.add_argument("--clients", type=positive, default=8, help="concurrent clients (default %(default)s)")
    ap.add_argument("--requests", type=positive, default=64, help="requests in all (default %(default)s)")
    ap.add_argument("--prompt-tokens", type=positive, default=128, help="tokens per random prompt (default "
                    "%(default)s; the chat endpoint adds its template's)")
    ap.add_argument("--prompt-file", help="prompts, one a line, used in turn (instead of random ones)")
    ap.add_argument("--max-tokens", type=positive, default=128, help="tokens generated per request (default "
                    "%(default)s)")
    ap.add_argument("--model", help="the model field of requests (default: the server's first of /v1/models)")
    ap.add_argument("--api-key", default=os.environ.get("QWEN_API_KEY"), help="sent as 'Authorization: Bearer "
                    "KEY' (default: the QWEN_API_KEY environment variable)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds a connection may wait for the server "
                    "(default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random prompts (default %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args(argv)
    if not args.timeout > 0:
        ap.error(f"--timeout must be positive, got {args.timeout}")
    if args.prompt_file:
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                args.prompt_lines = [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            ap.error(f"cannot read --prompt-file: {e}")
        if not args.prompt_lines:
            ap.error(f"--prompt-file {args.prompt_file} holds no prompt")
    try:
        args.target = Target(args.url, args.api_key, args.timeout)
    except ValueError as e:
        ap.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    target = args.target
    reachable, model = probe(target)
    model = args.model or model
    prompts = make_prompts(args, target, reachable)
    bodies = [request_body(args, model, p) for p in prompts]
    records, duration = run(target, args.endpoint, bodies, min(args.clients, args.requests))
    m = aggregate(records, duration)
    m["config"] = {"url": args.url, "endpoint": args.endpoint, "model": model, "clients": args.clients,
                   "requests": args.requests, "prompt_tokens": None if args.prompt_file else args.prompt_tokens,
                   "prompt_file": args.prompt_file, "max_tokens": args.max_tokens, "seed": args.seed}
    if args.json:
        print(json.dumps(m, indent=1))
    else:
        print_report(m)
    if m["failed"]:
        print(f"error: {m['failed']} of {args.requests} requests failed; the first: {m['first_error']}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted")
