"""End-to-end tests of the ./qwen command line.

They run the real binary on the exported fixtures (built by `make test`): the tiny random-weight checkpoints
(whose text is gibberish, so answers are compared as bytes and token ids) and the real Qwen tokenizer.
Comparisons that must be exact (greedy text against Hugging Face) use --cpu: the CPU engine is the fp32
reference, while a GPU may flip a greedy choice where two logits almost tie.
"""
import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QWEN = Path(os.environ.get("QWEN_BIN", ROOT / "qwen"))  # QWEN_BIN: another build of main.cu
NO_CUDA = os.environ.get("QWEN_NO_CUDA") == "1"          # that build was compiled without CUDA
BUILD = ROOT / "build"
DATA = ROOT / "test" / "data"
TINY = ["tiny-qwen2", "tiny-qwen15", "tiny-qwen3"]
REAL_TOKENIZER = BUILD / "qwen-tokenizer.bin"


def run(*args, stdin=None, timeout=120):
    """Runs ./qwen with args (str or bytes); stdout/stderr as bytes. Fails the test on any crash."""
    cmd = [str(QWEN)] + [a if isinstance(a, bytes) else str(a) for a in args]
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, cwd=ROOT)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode >= 0, f"killed by signal {-p.returncode}: {err}"
    for crash in ("Segmentation fault", "terminate called", "Aborted", "core dumped", "AddressSanitizer"):
        assert crash not in err, err
    return p


def ok(*args, **kw):
    p = run(*args, **kw)
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    return p


def model(name):
    return BUILD / f"{name}.bin"


def reference(name):
    return json.loads((DATA / name / "reference.json").read_text())["cases"]


# ---- byte-level decoding of token ids, independent of the engine -------------------------------------

def byte_decoder():
    """Inverse of the GPT-2 byte-to-unicode table that byte-level BPE vocabularies are written in."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def token_bytes(name):
    """id -> raw bytes for the tokenizer.json of a test checkpoint."""
    tj = json.loads((DATA / name / "tokenizer.json").read_text())
    dec = byte_decoder()
    out = {i: bytes(dec[c] for c in tok) for tok, i in tj["model"]["vocab"].items()}
    for added in tj["added_tokens"]:
        out[added["id"]] = added["content"].encode()
    return out


def stop_ids(name):
    """eos ids of the generation config plus <|im_end|>: where generation ends."""
    eos = json.loads((DATA / name / "generation_config.json").read_text())["eos_token_id"]
    ids = set(eos if isinstance(eos, list) else [eos])
    tj = json.loads((DATA / name / "tokenizer.json").read_text())
    ids |= {t["id"] for t in tj["added_tokens"] if t["content"] == "<|im_end|>"}
    return ids


def expected_bytes(name, ids):
    """The text the CLI must print for generated ids: their bytes, up to the first stop id."""
    table, stops = token_bytes(name), stop_ids(name)
    out = b""
    for i in ids:
        if i in stops:
            break
        out += table[i]
    return out


def ids_of(p):
    return [int(x) for x in p.stdout.split()]


# ---- greedy generation against Hugging Face ------------------------------------------------------------

@pytest.mark.parametrize("name", TINY)
def test_raw_greedy_matches_hf(name):
    for case in [c for c in reference(name) if c["mode"] == "raw"]:
        p = ok("-m", model(name), "--raw", "--temp", "0", "-n", "16", "--cpu", "-p", case["prompt"])
        assert p.stdout == expected_bytes(name, case["greedy_ids"]), case["prompt"]


@pytest.mark.parametrize("name", TINY)
def test_chat_greedy_matches_hf(name):
    # Chat mode prints the answer and one newline; the reference chat prompt is the default system prompt
    # plus the user message, which is what the CLI sends without -sys.
    for case in [c for c in reference(name) if c["mode"] == "chat"]:
        p = ok("-m", model(name), "--temp", "0", "-n", "16", "--cpu", "-p", case["prompt"])
        assert p.stdout == expected_bytes(name, case["greedy_ids"]) + b"\n", case["prompt"]


def test_raw_stops_at_stop_id():
    # tiny-qwen15 greedily produces <|im_end|> after 7 tokens of "Once upon a time": nothing after it shows.
    case = [c for c in reference("tiny-qwen15") if c["prompt"] == "Once upon a time" and c["mode"] == "raw"][0]
    assert 511 in case["greedy_ids"]
    p = ok("-m", model("tiny-qwen15"), "--raw", "--temp", "0", "-n", "16", "--cpu", "-p", case["prompt"])
    assert p.stdout == expected_bytes("tiny-qwen15", case["greedy_ids"][:case["greedy_ids"].index(511)])
    assert b"(stop)" in p.stderr


def test_n_limits_tokens_and_stats_on_stderr():
    p = ok("-m", model("tiny-qwen2"), "--raw", "--temp", "0", "-n", "5", "--cpu", "-p", "Once upon a time")
    case = [c for c in reference("tiny-qwen2") if c["prompt"] == "Once upon a time" and c["mode"] == "raw"][0]
    assert p.stdout == expected_bytes("tiny-qwen2", case["greedy_ids"][:5])
    err = p.stderr.decode()
    for word in ("prompt 10 tokens", "5 tokens generated (length)", "prefill", "decode", "first token", "total"):
        assert word in err, err


def test_seed_makes_sampling_reproducible():
    args = ["-m", model("tiny-qwen3"), "--temp", "1.0", "--top-k", "0", "--top-p", "1", "-n", "24", "-p", "hi"]
    a = ok(*args, "-s", "1234").stdout
    b = ok(*args, "-s", "1234").stdout
    assert a == b
    outs = {ok(*args, "-s", str(s)).stdout for s in range(6)}
    assert len(outs) > 1, "different seeds should give different samples"
    v = ok(*args, "--verbose")
    assert b"seed " in v.stderr, "the clock-chosen seed is printed with --verbose"


def test_cpu_fallback_is_announced_once():
    p = ok("-m", model("tiny-qwen2"), "-n", "2", "-p", "hi")
    if NO_CUDA:
        msg, expected = b"qwen: this build has no CUDA (built without nvcc), running on the CPU\n", 1
    else:
        msg, expected = b"qwen: no CUDA device found, running on the CPU\n", 0 if Path("/dev/nvidia0").exists() else 1
    assert p.stderr.count(msg) == expected, p.stderr
    p = ok("-m", model("tiny-qwen2"), "-n", "2", "-p", "hi", "--cpu", "--verbose")
    assert b"running on the CPU" not in p.stderr and b"engine cpu" in p.stderr


# ---- --tokenize -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TINY)
def test_tokenize_chat_and_raw(name):
    for case in reference(name):
        raw = ["--raw"] if case["mode"] == "raw" else []
        p = ok("-m", model(name), "--tokenize", *raw, "-p", case["prompt"])
        assert ids_of(p) == case["input_ids"], case
        assert p.stdout.count(b"\n") == 1


def test_tokenize_tokenizer_only_file():
    # tokenizer-small.bin has no weights: --tokenize works, generation is refused.
    case = [c for c in reference("tiny-qwen2") if c["mode"] == "chat"][0]
    p = ok("-m", BUILD / "tokenizer-small.bin", "--tokenize", "-p", case["prompt"])
    assert ids_of(p) == case["input_ids"]
    p = run("-m", BUILD / "tokenizer-small.bin", "-p", "hi")
    assert p.returncode == 1 and p.stderr.startswith(b"qwen: error: ")


def real_cases():
    cases = json.loads((DATA / "qwen-tokenizer" / "cases.json").read_text())
    picked = [c for c in cases[:60] if c["text"] and "\0" not in c["text"]]
    return picked + [c for c in cases[60:] if "\0" not in c["text"]][::40]


def test_tokenize_real_tokenizer_cases():
    for case in real_cases():
        p = ok("-m", REAL_TOKENIZER, "--tokenize", "--raw", "-p", case["text"])
        assert ids_of(p) == case["ids"], repr(case["text"])


def test_tokenize_real_chat_template():
    # The real tokenizer carries Qwen3's template: no default system prompt, and --no-think adds the empty
    # think block after the assistant header.
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(DATA / "qwen-tokenizer" / "tokenizer.json"))
    enc = lambda t: hf.encode(t, add_special_tokens=False).ids
    user = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    p = ok("-m", REAL_TOKENIZER, "--tokenize", "-p", "What is 2+2?")
    assert ids_of(p) == enc(user)
    p = ok("-m", REAL_TOKENIZER, "--tokenize", "--no-think", "-p", "What is 2+2?")
    assert ids_of(p) == enc(user + "<think>\n\n</think>\n\n")
    p = ok("-m", REAL_TOKENIZER, "--tokenize", "-sys", "Be brief.", "-p", "What is 2+2?")
    assert ids_of(p) == enc("<|im_start|>system\nBe brief.<|im_end|>\n" + user)


def test_prompt_file_is_read_byte_for_byte(tmp_path):
    # Trailing newline, CRLF, tabs, a special token and non-ASCII: -f must not strip or translate anything.
    text = "  Hello\tworld\r\n<|im_end|>ünïcödé 你好\n\n"
    f = tmp_path / "prompt.txt"
    f.write_bytes(text.encode())
    by_file = ok("-m", REAL_TOKENIZER, "--tokenize", "--raw", "-f", f)
    by_arg = ok("-m", REAL_TOKENIZER, "--tokenize", "--raw", "-p", text)
    assert ids_of(by_file) == ids_of(by_arg)
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(DATA / "qwen-tokenizer" / "tokenizer.json"))
    assert ids_of(by_file) == hf.encode(text, add_special_tokens=False).ids
    # and '-f -' reads stdin
    by_stdin = ok("-m", REAL_TOKENIZER, "--tokenize", "--raw", "-f", "-", stdin=text.encode())
    assert ids_of(by_stdin) == ids_of(by_file)


# ---- --batch ----------------------------------------------------------------------------------------

def one_shot_answer(name, prompt, *extra):
    p = ok("-m", model(name), "--temp", "0", "--cpu", "-p", prompt, *extra)
    assert p.stdout.endswith(b"\n")
    return p.stdout[:-1].decode("utf-8", "replace")   # the batch writer replaces invalid UTF-8 the same way


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-qwen15"])
def test_batch_plain_lines_equal_one_shot(tmp_path, name):
    prompts = ["Hello, my dog is cute", "你好", "Once upon a time"]
    f = tmp_path / "prompts.txt"
    f.write_text("\n".join(prompts[:2]) + "\n\n" + prompts[2] + "\n")  # the empty line is skipped
    p = ok("-m", model(name), "--batch", f, "--temp", "0", "-n", "12", "--cpu")
    lines = p.stdout.decode("utf-8").splitlines()   # strict: the output must be valid UTF-8
    assert len(lines) == 3
    for prompt, line in zip(prompts, lines):
        r = json.loads(line)
        assert set(r) == {"prompt", "response", "prompt_tokens", "completion_tokens", "finish_reason"}
        assert r["prompt"] == prompt
        assert r["response"] == one_shot_answer(name, prompt, "-n", "12")
        assert r["finish_reason"] in ("stop", "length")
        assert 1 <= r["completion_tokens"] <= 12
        chat_ids = ids_of(ok("-m", model(name), "--tokenize", "-p", prompt))
        assert r["prompt_tokens"] == len(chat_ids)
    # these gibberish answers hold invalid UTF-8 (tiny-qwen2) and control characters (tiny-qwen15)
    assert "\ufffd" in p.stdout.decode() if name == "tiny-qwen2" else "\\u0013" in p.stdout.decode()


def test_batch_jsonl_per_prompt_settings(tmp_path):
    objs = [
        {"prompt": "Once upon a time", "temperature": 0, "max_tokens": 3},
        {"prompt": "你好", "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 7, "max_tokens": 10},
        {"prompt": "你好", "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 7, "max_tokens": 10},
        {"prompt": "hi", "temperature": 0, "repetition_penalty": 1.3, "presence_penalty": 0.5, "min_p": 0.05,
         "stop": ["\n"], "max_tokens": 16},
    ]
    lines = [json.dumps(o) for o in objs]
    # escapes: \uXXXX with a surrogate pair, quotes, backslash, control characters
    lines.append(r'{"prompt": "emoji \ud83d\ude00 \"q\" back\\slash\ttab\u00e9", "max_tokens": 2, '
                 r'"stop": "zz", "seed": 18446744073709551615, "top_p": null}')
    f = tmp_path / "prompts.jsonl"
    f.write_text("\n".join(lines) + "\n")
    p = ok("-m", model("tiny-qwen3"), "--batch", f, "--cpu", "-n", "50")
    out = [json.loads(l) for l in p.stdout.decode("utf-8").splitlines()]
    assert len(out) == 5
    assert out[0]["completion_tokens"] <= 3 and out[0]["prompt"] == "Once upon a time"
    assert out[0]["response"] == one_shot_answer("tiny-qwen3", "Once upon a time", "-n", "3")
    assert out[1]["response"] == out[2]["response"], "same seed, same sample"
    assert "\n" not in out[3]["response"]
    assert out[4]["prompt"] == "emoji \U0001F600 \"q\" back\\slash\ttab\u00e9"
    assert out[4]["completion_tokens"] <= 2


@pytest.mark.parametrize("name", TINY)
def test_batch_stop_string_spanning_two_tokens(tmp_path, name):
    """A stop string made of the last byte of one generated token and the first of the next ends the answer just
    before it: the text that could be its start is held back, not streamed and then missed."""
    table, stops = token_bytes(name), stop_ids(name)
    for case in (c for c in reference(name) if c["mode"] == "raw"):
        greedy = case["greedy_ids"]
        n = next((i for i, t in enumerate(greedy) if t in stops), len(greedy))
        pieces = [table[t] for t in greedy[:n]]
        text = b"".join(pieces)
        ends = [len(b"".join(pieces[:k + 1])) for k in range(len(pieces) - 1)]
        # a boundary with printable ASCII on both sides whose byte pair occurs first right there
        at = next((e - 1 for e in ends if all(32 <= b < 127 and b != 34 and b != 92 for b in text[e - 1:e + 1])
                   and text.find(text[e - 1:e + 1]) == e - 1), None)
        if at is None:
            continue
        stop = text[at:at + 2].decode()
        f = tmp_path / "stop.jsonl"
        f.write_text(json.dumps({"prompt": case["prompt"], "max_tokens": n, "stop": stop}) + "\n")
        out = json.loads(ok("-m", model(name), "--batch", f, "--raw", "--temp", "0", "--cpu").stdout)
        assert out["response"] == text[:at].decode("utf-8", "replace") and out["finish_reason"] == "stop", (stop, out)
        return
    pytest.fail(f"{name}: no raw case has a token boundary to put a stop string across")


def test_batch_crlf_lines_are_the_same_prompts(tmp_path):
    crlf, lf = tmp_path / "crlf.txt", tmp_path / "lf.txt"
    crlf.write_bytes(b'{"prompt": "Once upon a time", "max_tokens": 3}\r\nhi\r\n\r\n')
    lf.write_bytes(b'{"prompt": "Once upon a time", "max_tokens": 3}\nhi\n')
    args = ["-m", model("tiny-qwen2"), "--temp", "0", "-n", "4", "--cpu", "--batch"]
    out = [json.loads(l) for l in ok(*args, crlf).stdout.decode().splitlines()]
    assert [o["prompt"] for o in out] == ["Once upon a time", "hi"], "the CR is not part of the prompt"
    assert ok(*args, crlf).stdout == ok(*args, lf).stdout


def test_batch_errors_name_the_line(tmp_path):
    bad = [
        ('{"prompt": "a"}\n{"prompt": "b", }\n', "line 2"),                      # trailing comma
        ('hello\n{"prompt": "b", "temprature": 1}\n', 'line 2: unknown field "temprature"'),
        ('{"prompt": "a", "temperature": -1}\n', "line 1: temperature"),
        ('{"prompt": "a", "temperature": 1e300}\n', 'line 1: "temperature" is out of range, got 1e+300'),
        ('{"prompt": "a", "seed": 1, "seed": 2}\n', 'line 1: duplicate key "seed"'),     # no silent override
        ('{"prompt": "a", "seed": -1}\n', 'line 1: "seed" must be an integer in [0, 2^64)'),
        ('{"prompt": "a", "seed": 18446744073709551616}\n', 'line 1: "seed" must be an integer'),
        ('{"prompt": "a", "seed": 1.5}\n', 'line 1: "seed" must be an integer'),
        ('{"prompt": "a\x01b"}\n', "line 1"),                                        # a raw control character
        ('{"prompt": "a", "stop": {"x": 1}}\n', 'line 1: "stop" must be a string or an array of strings'),
        ('{"prompt": "a", "stop": [[[[[["x"]]]]]]}\n', "line 1: values nested deeper than a list"),
        ('{"prompt": 5}\n', "line 1"),
        ('{"prompt": "\\ud800"}\n', "line 1"),                                    # lone surrogate
        ('{"prompt": "a"} x\n', "line 1"),
        ('{"max_tokens": 4}\n', 'line 1: missing "prompt"'),
        ('ok\n\n{"prompt": "a", "stop": [1]}\n', "line 3"),
    ]
    for i, (text, msg) in enumerate(bad):
        f = tmp_path / f"bad{i}.jsonl"
        f.write_text(text)
        p = run("-m", model("tiny-qwen2"), "--batch", f, "--cpu")
        assert p.returncode == 1, text
        assert p.stdout == b"", "nothing is generated before every line has been checked"
        assert msg.encode() in p.stderr, (text, p.stderr)
    f = tmp_path / "bad-utf8.txt"
    f.write_bytes(b"fine\n\xff\xfe\n")
    p = run("-m", model("tiny-qwen2"), "--batch", f, "--cpu")
    assert p.returncode == 1 and b"line 2" in p.stderr and b"UTF-8" in p.stderr


# ---- -i interactive chat ------------------------------------------------------------------------------

TURN = ["-m", model("tiny-qwen2"), "--temp", "0", "-n", "4", "--cpu"]


def test_interactive_keeps_history():
    u1, u2 = "Once upon a time", "hi"
    a1 = ok(*TURN, "-p", u1).stdout[:-1]
    assert a1.decode("utf-8") and not a1[:1].isspace(), "this check needs a clean first answer"
    p = ok(*TURN, "-i", "--verbose", stdin=f"{u1}\n{u2}\n".encode())
    # The second answer must be the greedy continuation of the whole conversation. Written out as ChatML and
    # completed with --raw, the same conversation gives the same prompt ids and hence the same answer.
    transcript = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                  f"<|im_start|>user\n{u1}<|im_end|>\n<|im_start|>assistant\n{a1.decode()}<|im_end|>\n"
                  f"<|im_start|>user\n{u2}<|im_end|>\n<|im_start|>assistant\n")
    history_ids = ids_of(ok("-m", model("tiny-qwen2"), "--tokenize", "--raw", "-p", transcript))
    a2 = ok(*TURN, "--raw", "-p", transcript).stdout
    assert p.stdout == a1 + b"\n" + a2 + b"\n"
    err = p.stderr.decode()
    turn1 = len(ids_of(ok("-m", model("tiny-qwen2"), "--tokenize", "-p", u1)))
    assert f"turn 1: prompt {turn1} tokens," in err, err
    # turn 2's prompt is the whole history, and at least turn 1's prompt came from the KV cache
    n2, cached = re.search(r"turn 2: prompt (\d+) tokens \((\d+) from the cache\)", err).groups()
    assert int(n2) == len(history_ids), err
    assert int(cached) >= turn1, err
    # without history the answer to u2 differs here, so the comparison above really depends on it
    assert ok(*TURN, "-p", u2).stdout != a2 + b"\n"


def test_interactive_reset_and_exit():
    p = ok(*TURN, "-i", "--verbose", stdin=b"Once upon a time\n/reset\nOnce upon a time\n/exit\nnever read\n")
    one = ok(*TURN, "-p", "Once upon a time").stdout
    assert p.stdout == one + one, "after /reset the same question gets the same answer"
    err = p.stderr.decode()
    assert "history cleared" in err
    n1 = err.split("turn 1: prompt ")[1].split(" ")[0]
    n2 = err.split("turn 2: prompt ")[1].split(" ")[0]
    assert n1 == n2
    assert "turn 3" not in err, "/exit ends the chat"


def test_interactive_eof_and_prompt_flag():
    # -p gives the first message; end of input (Ctrl-D) leaves cleanly
    p = ok(*TURN, "-i", "-p", "Once upon a time", stdin=b"")
    assert p.stdout == ok(*TURN, "-p", "Once upon a time").stdout


def test_interactive_drops_old_turns_when_context_is_full():
    lines = "".join(f"tell me story number {i} about a dog and a cat\n" for i in range(8))
    p = ok("-m", model("tiny-qwen2"), "--temp", "0", "-n", "6", "--cpu", "-c", "90", "-i", "--verbose",
           stdin=lines.encode() + b"x " * 200 + b"\nlast\n")
    err = p.stderr.decode()
    assert "dropped the oldest" in err
    assert "message ignored" in err, "a message longer than the context is refused, the chat goes on"
    assert "turn 9:" in err, "the turn after the refused message still runs"


def test_interactive_trimming_keeps_the_system_prompt_and_the_newest_turns():
    """Which turns survive: the -sys prompt always, then the newest exchanges that leave room for the answer
    (-n); each turn's prompt is rebuilt here from the answers printed and tokenized with --tokenize --raw."""
    system, room, context = "Answer in one word.", 5, 100
    users = [f"question {i}: which is faster, a dog or a cat or a bird?" for i in range(7)]
    p = ok("-m", model("tiny-qwen2"), "--temp", "0", "-n", room, "--cpu", "-c", context, "-i", "--verbose",
           "-sys", system, stdin="".join(u + "\n" for u in users).encode())
    answers = p.stdout.decode("utf-8", "replace").split("\n")[:-1]  # as the history keeps them: U+FFFD for bad bytes
    assert len(answers) == len(users), p.stdout
    prompts = [int(n) for n in re.findall(r"turn \d+: prompt (\d+) tokens", p.stderr.decode())]
    assert len(prompts) == len(users)

    def rendered(first, t):  # system + exchanges first..t-1 + user t, as ChatML
        turns = [("system", system)] + [x for i in range(first, t) for x in (("user", users[i]), ("assistant", answers[i]))]
        turns.append(("user", users[t]))
        return "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in turns) + "<|im_start|>assistant\n"

    first, dropped = 0, 0
    for t in range(len(users)):
        while True:  # the oldest exchanges go first, and what went once never comes back
            n = len(ids_of(ok("-m", model("tiny-qwen2"), "--tokenize", "--raw", "-p", rendered(first, t))))
            if n + room <= context or first == t:
                break
            first, dropped = first + 1, dropped + 1
        assert prompts[t] == n, (t, first)
    assert dropped >= 2, "the test must make the history outgrow the context"
    assert p.stderr.decode().count("dropped the oldest") >= 1


# ---- errors and help ---------------------------------------------------------------------------------

def test_help_lists_every_flag():
    p = ok("--help")
    text = p.stdout.decode()
    for flag in ["-m", "-p", "-f", "-sys", "-n", "-c", "--temp", "--top-p", "--top-k", "--min-p",
                 "--repeat-penalty", "--presence-penalty", "-s, --seed", "--raw", "--no-think", "-i",
                 "--batch", "--cpu", "-t, --threads", "--tokenize", "--verbose", "--bench", "--type", "--json",
                 "-h, --help", "--grammar FILE", "--json-schema FILE", "--json-object", "--repeat-last-n",
                 "--frequency-penalty", "-ngl, --n-gpu-layers", "-fa, --flash-attn", "-no-cnv", "--in-prefix",
                 "--in-suffix", "-if, --interactive-first", "-co, --color"]:
        assert flag in text, flag
    assert ok("-h").stdout == p.stdout


def test_gpu_bench_runs_or_fails_cleanly():
    p = run("--bench", "qwen2.5-0.5b", "--json", timeout=600)
    if Path("/dev/nvidia0").exists() and not NO_CUDA:  # a smoke test of the GPU benchmark: every figure present
        assert p.returncode == 0, p.stderr
        report = json.loads(p.stdout)
        assert report["engine"] == "cuda" and report["copy_gb_s"] > 0 and report["gpu_memory_gb"] > 0
        assert [r["test"] for r in report["results"]] == ["prefill 512", "prefill 2048", "decode @128", "decode @4096"]
        for r in report["results"]:
            assert r["tok_s"] > 0 and ("decode" not in r["test"] or 0 < r["pct_of_copy"] < 100), r
        return
    assert p.returncode == 1 and p.stderr.startswith(b"qwen: error: ") and b"CUDA device" in p.stderr
    assert b"--cpu" in p.stderr
    assert p.stdout == b""


def test_help_mentions_the_cpu_bench():
    assert b"with --cpu" in ok("--help").stdout


def check_cpu_bench_json(out, name, synthetic):
    report = json.loads(out)
    assert report["model"] == name and report["synthetic"] is synthetic and report["engine"] == "cpu"
    assert report["threads"] >= 1 and report["cores"] >= 1 and report["weights_gb_per_token"] > 0
    tests = [r["test"] for r in report["results"]]
    assert tests == ["prefill 128", "decode @128", "prefill 512", "decode @512"]
    for r in report["results"]:
        figures = [r["tok_s"], r["ms_per_token"]] + ([r["bytes_per_token"], r["gb_s"]] if "decode" in r["test"] else [])
        assert all(math.isfinite(x) and x > 0 for x in figures), r
    return report


def test_cpu_bench_on_a_shape_prints_json():
    # The real Qwen2.5-0.5B shape with random weights: some 10 s on two cores.
    p = ok("--bench", "qwen2.5-0.5b", "--cpu", "--json", timeout=300)
    report = check_cpu_bench_json(p.stdout, "qwen2.5-0.5b", True)
    assert abs(report["weights_gb_per_token"] - 0.988) < 0.001  # 494M bf16 values, the embedding tied
    decode = report["results"][1]
    assert decode["bytes_per_token"] == pytest.approx(0.988e9 + (128 + 8) * 24576, rel=1e-3)  # + fp32 KV cache


def test_cpu_bench_of_quantized_synthetic_weights():
    # --type: the same shape in Q8_0 reads 34 bytes per 32 weights instead of 64 (norms and biases in fp32).
    p = ok("--bench", "qwen2.5-0.5b", "--cpu", "--json", "--type", "q8_0", timeout=300)
    report = check_cpu_bench_json(p.stdout, "qwen2.5-0.5b", True)
    assert report["type"] == "q8_0"
    assert report["weights_gb_per_token"] == pytest.approx(0.988 * 34 / 64, rel=2e-3)
    p = ok("--bench", "qwen2.5-0.5b", "--cpu", "--type", "q4_k_m", timeout=300)
    assert b"synthetic q4_k_m weights" in p.stdout
    p = run("--bench", model("tiny-qwen2"), "--cpu", "--type", "q8_0")
    assert p.returncode == 1 and b"--type is for a preset shape" in p.stderr


def test_cpu_bench_on_a_file_prints_a_table():
    p = ok("--bench", model("tiny-qwen2"), "--cpu", "--json", "-t", "1")
    assert check_cpu_bench_json(p.stdout, str(model("tiny-qwen2")), False)["threads"] == 1
    p = ok("--bench", model("tiny-qwen2"), "--cpu", "-t", "2")
    text = p.stdout.decode()
    assert "weights file" in text and "engine: cpu, 2 threads" in text and "cores)" in text
    for row in ["prefill 128", "decode @128", "prefill 512", "decode @512"]:
        assert re.search(rf"^{row} +[0-9.]+ +[0-9.]+ ", text, re.M), (row, text)


def test_cpu_bench_of_an_unknown_shape_lists_the_shapes():
    p = run("--bench", "qwen9-1t", "--cpu")
    assert p.returncode == 1 and p.stdout == b""
    err = p.stderr.decode()
    assert err.startswith("qwen: error: ") and "qwen9-1t" in err
    assert all(s in err for s in ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2-7b"]), err


def test_usage_errors_exit_2():
    m = model("tiny-qwen2")
    cases = [
        (["-p", "hi"], "no model given"),
        (["-m", m, "-p", "hi", "--frobnicate"], "unknown argument '--frobnicate'"),
        (["-m", m, "-p", "hi", "--type", "q8_0"], "--type only goes with --bench"),
        (["--bench", "qwen2.5-0.5b", "--cpu", "--type", "q3_k"], "--type must be one of bf16, q8_0, q4_k_m, q5_k_m"),
        (["-m", m, "-p"], "-p needs a value"),
        (["-m", m, "-p", "hi", "--temp", "warm"], "--temp expects a number, got 'warm'"),
        (["-m", m, "-p", "hi", "-n", "1.5"], "-n expects an integer"),
        (["-m", m, "-p", "hi", "--top-k", "nan"], "--top-k expects an integer"),
        (["-m", m, "-p", "hi", "--temp", "inf"], "--temp expects a number"),
        (["-m", m, "-p", "hi", "--temp", "-1"], "temperature must be"),
        (["-m", m, "-p", "hi", "--top-p", "0"], "top_p must be"),
        (["-m", m, "-p", "hi", "--min-p", "2"], "min_p must be"),
        (["-m", m, "-p", "hi", "--presence-penalty", "3"], "presence_penalty must be"),
        (["-m", m, "-p", "hi", "--repeat-penalty", "0"], "repetition_penalty must be"),
        (["-m", m, "-p", "hi", "-c", "0"], "-c must be in"),
        (["-m", m, "-p", "hi", "-c", "4096"], "larger than the model's max_seq_len of 1024"),
        (["-m", m, "-p", "hi", "-s", "x"], "-s expects an integer"),
        (["-m", m, "-p", "hi", "-f", "x.txt"], "not both"),
        (["-m", m], "no prompt given"),
        (["-m", m, "-i", "--batch", "x"], "cannot be combined"),
        (["-m", m, "-p", "hi", "--json"], "--json only goes with --bench"),
        (["-m", m, "--batch", "x", "-p", "hi"], "drop -p/-f"),
        (["-m", m, "--in-prefix", "x", "-p", "hi"], "--in-prefix and --in-suffix go with -i"),
        (["-m", m, "-i", "--in-suffix", "x", "-sys", "s"], "-sys needs the chat template"),
        (["-m", m, "-p", "hi", "--json-object", "--grammar", "g"], "give one of --grammar, --json-schema"),
        (["-m", m, "-p", "hi", "--json-object", "--tokenize"], "--tokenize generates nothing to constrain"),
        (["-m", m, "-p", "hi", "-ngl", "many"], "-ngl expects an integer, got 'many'"),
        (["-m", m, "-p", "hi", "--repeat-last-n", "-3"], "--repeat-last-n must be in [-1, 2147483647], got -3"),
        (["-m", m, "-p", "hi", "--frequency-penalty", "3"], "frequency_penalty must be in [-2, 2], got 3"),
        (["-m", m, "--raw", "-sys", "Be brief.", "-p", "hi"], "-sys needs the chat template"),
        (["-m", m, "--raw", "--no-think", "-p", "hi"], "--no-think needs the chat template"),
        (["-m", m, "--tokenize", "--raw", "--no-think", "-p", "hi"], "--no-think needs the chat template"),
        (["-m", m, "-p", "hi", "-n", "99999999999999999999"], "-n is out of range, got '99999999999999999999'"),
        (["-m", m, "-p", "hi", "-c", "-99999999999999999999"], "-c is out of range"),
        (["-m", m, "-p", "hi", "-n", "-2"], "-n must be in [-1, 2147483647], got -2"),
        (["-m", m, "-p", "hi", "--temp", "1e300"], "--temp is out of range, got '1e300'"),
        (["-m", m, "-p", "hi", "--top-p", "1e999"], "--top-p is out of range, got '1e999'"),
    ]
    for args, msg in cases:
        p = run(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith(b"qwen: error: "), p.stderr
        assert msg.encode() in p.stderr, (args, p.stderr)
        assert p.stdout == b""


def test_runtime_errors_exit_1(tmp_path):
    m = model("tiny-qwen2")
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(m.read_bytes()[:5000])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00" * 300)
    bad_utf8 = tmp_path / "bad.txt"
    bad_utf8.write_bytes(b"caf\xc3 ok")
    cases = [
        (["-m", tmp_path / "missing.bin", "-p", "hi"], "cannot open"),
        (["-m", tmp_path, "-p", "hi"], ""),                                   # a directory
        (["-m", corrupt, "-p", "hi"], ""),
        (["-m", garbage, "-p", "hi"], ""),
        (["-m", garbage, "--tokenize", "-p", "hi"], ""),
        (["-m", m, "-c", "16", "-p", " a" * 40], "more than the context of 16"),
        (["-m", m, "-c", "16", "--raw", "-p", " a" * 40], "prompt is 40 tokens, 24 more than the context of 16"),
        (["-m", m, "-p", b"caf\xc3 ok"], "not valid UTF-8 (byte 3)"),
        (["-m", m, "-f", bad_utf8], "not valid UTF-8 (byte 3)"),
        (["-m", m, "-sys", b"\xff", "-p", "hi"], "not valid UTF-8"),
        (["-m", m, "-f", tmp_path / "nope.txt"], "cannot open"),
        (["-m", m, "--batch", tmp_path / "nope.txt"], "cannot open"),
        (["-m", m, "--raw", "-p", ""], "empty"),
        (["-m", m, "-f", tmp_path], "is a directory"),
        (["-m", m, "--batch", tmp_path], "is a directory"),
        (["-m", m, "-f", "/dev/zero"], "larger than 64 MiB"),
        (["-m", m, "--batch", "/dev/zero"], "larger than 64 MiB"),
    ]
    for args, msg in cases:
        p = run(*args, "--cpu")
        assert p.returncode == 1, (args, p.stderr)
        assert p.stderr.startswith(b"qwen: error: "), (args, p.stderr)
        assert msg.encode() in p.stderr, (args, p.stderr)
        assert p.stdout == b""


def test_unreadable_stdin_is_an_error():
    # '-f -' with stdin closed: an error, not an empty prompt.
    cmd = [str(QWEN), "-m", str(model("tiny-qwen2")), "--cpu", "-f", "-"]
    p = subprocess.run(cmd + ["--raw"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert p.returncode == 1 and b"empty" in p.stderr, p.stderr     # /dev/null: an empty prompt
    p = subprocess.run(" ".join(cmd) + " <&-", shell=True, capture_output=True, timeout=60)
    assert p.returncode == 1 and p.stderr.startswith(b"qwen: error: stdin: "), p.stderr


def test_prompt_from_a_pipe(tmp_path):
    fifo = tmp_path / "prompt.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen([str(QWEN), "-m", str(REAL_TOKENIZER), "--tokenize", "--raw", "-f", str(fifo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(fifo, "wb") as w:
        w.write("Hello, world!".encode())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == ok("-m", REAL_TOKENIZER, "--tokenize", "--raw", "-p", "Hello, world!").stdout


def test_failed_writes_to_stdout_are_errors():
    args = [str(QWEN), "-m", str(model("tiny-qwen2")), "--cpu", "--temp", "0"]
    # stdout closed
    p = subprocess.run(" ".join(args + ["-n", "4", "-p", "hi", ">&-"]), shell=True, capture_output=True,
                       timeout=60)
    assert p.returncode == 1 and b"qwen: error: cannot write to stdout" in p.stderr, p.stderr
    p = subprocess.run(" ".join(args + ["--help", ">&-"]), shell=True, capture_output=True, timeout=60)
    assert p.returncode == 1 and b"cannot write to stdout" in p.stderr, p.stderr
    # a full device
    if Path("/dev/full").exists():
        with open("/dev/full", "wb") as full:
            p = subprocess.run(args + ["-n", "4", "-p", "hi"], stdout=full, stderr=subprocess.PIPE, timeout=60)
        assert p.returncode == 1 and b"No space left on device" in p.stderr, p.stderr
    # a reader that goes away: EPIPE is reported, not a silent death by SIGPIPE (a long batch, so that the
    # reader is gone well before the output ends)
    proc = subprocess.Popen(args + ["-n", "64", "--batch", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdin.write(b"hi\n" * 500)
    proc.stdin.close()
    proc.stdout.read(1)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(120) == 1, err
    assert b"cannot write to stdout: Broken pipe" in err, err


def test_stats_without_decode_steps():
    # One token generated: no decode step was timed, so there is no rate to show.
    p = ok("-m", model("tiny-qwen2"), "--raw", "--temp", "0", "-n", "1", "--cpu", "-p", "Once upon a time")
    err = p.stderr.decode()
    assert "1 tokens generated (length), decode - tok/s" in err, err
    p = ok("-m", model("tiny-qwen2"), "--raw", "--temp", "0", "-n", "3", "--cpu", "-p", "Once upon a time")
    assert re.search(r"decode \d+\.\d tok/s", p.stderr.decode()), p.stderr


# ---- structured output: --grammar, --json-schema, --json-object ---------------------------------------------------

FREE = ["--temp", "4", "--top-k", "0", "--top-p", "1"]  # the grammar's mask does the work on a random model


def test_json_schema_answers_validate(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                               "n": {"type": "integer", "minimum": 1, "maximum": 99},
                                               "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
              "required": ["name", "n"], "additionalProperties": False}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    answers = set()
    for seed in range(4):
        p = ok("-m", model("tiny-qwen2"), "-p", "A record:", "--json-schema", path, "-n", "400", "-s", seed, *FREE)
        text = p.stdout.decode()
        assert text.endswith("\n") and "(stop)" in p.stderr.decode()
        jsonschema.validate(json.loads(text), schema)
        answers.add(text)
    assert len(answers) > 1
    # --raw too, and the llama.cpp spelling of the flag
    p = ok("-m", model("tiny-qwen3"), "--raw", "-p", "{", "--json-schema-file", path, "-n", "400", "-s", "1", *FREE)
    jsonschema.validate(json.loads(p.stdout.decode()), schema)


def test_grammar_and_json_object(tmp_path):
    g = tmp_path / "g.gbnf"
    g.write_text('root ::= "[" item ("," item){0,3} "]"\nitem ::= [a-z] [0-9]\n')
    for seed in range(3):
        p = ok("-m", model("tiny-qwen2"), "-p", "list", "--grammar", g, "-n", "100", "-s", seed, *FREE)
        assert re.fullmatch(r"\[[a-z][0-9](,[a-z][0-9]){0,3}\]\n", p.stdout.decode()), p.stdout
    p = ok("-m", model("tiny-qwen2"), "-p", "obj", "--json-object", "-n", "900", "-s", "3", *FREE)
    if "(stop)" in p.stderr.decode():
        assert isinstance(json.loads(p.stdout.decode()), dict)
    else:
        assert p.stdout.startswith(b"{")
    # the limit comes before the grammar's end: "length", and the text so far
    p = ok("-m", model("tiny-qwen2"), "-p", "list", "--grammar", g, "-n", "2", "-s", "0", *FREE)
    assert "2 tokens generated (length)" in p.stderr.decode() and p.stdout.startswith(b"[")
    # -i: every answer keeps to it
    p = ok("-m", model("tiny-qwen2"), "-i", "--grammar", g, "-n", "100", *FREE, stdin=b"one\ntwo\n")
    lines = p.stdout.decode().splitlines()
    assert len(lines) == 2 and all(re.fullmatch(r"\[[a-z][0-9](,[a-z][0-9]){0,3}\]", x) for x in lines), lines


@pytest.mark.parametrize("flag, text, message", [
    ("--json-schema", '{"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 2}}}',
     "--json-schema SCHEMA: json schema: /properties/a: unsupported keyword 'multipleOf'"),
    ("--json-schema", '{"type": "object",\n "properties": {"a": 1,}}', "json schema: line 2 col 24"),
    ("--grammar", 'root ::= "a" (', "--grammar SCHEMA: grammar: line 1 col 14: '(' is not closed"),
    ("--grammar", 'root ::= x\nx ::= "(" x ")"\n', "can never end"),
    ("--grammar", 'start ::= "a"\n', "root"),
])
def test_bad_grammars_exit_2_with_the_place(tmp_path, flag, text, message):
    path = tmp_path / "SCHEMA"
    path.write_text(text)
    p = run("-m", model("tiny-qwen2"), "-p", "hi", flag, path)
    err = p.stderr.decode()
    assert p.returncode == 2 and p.stdout == b"", err
    assert err.startswith("qwen: error: ") and err.count("\n") == 1, err
    assert message.replace("SCHEMA", str(path)) in err, err
    p = run("-m", model("tiny-qwen2"), "-p", "hi", flag, tmp_path / "missing")
    assert p.returncode == 1 and b"cannot open" in p.stderr


# ---- llama.cpp's flags and its interactive session ----------------------------------------------------------------

def test_llama_cpp_flags_are_accepted():
    m = model("tiny-qwen2")
    plain = ok("-m", m, "--raw", "-p", "Once upon a time", "-n", "8", "--temp", "0", "--cpu").stdout
    p = ok("-m", m, "-no-cnv", "-p", "Once upon a time", "-n", "8", "--temp", "0", "--cpu", "-ngl", "99", "-fa",
           "--verbose")
    assert p.stdout == plain  # -no-cnv is --raw; -ngl and -fa change nothing
    err = p.stderr.decode()
    assert "-ngl 99 has no effect" in err and "flash attention is always on" in err
    for fa in (["-fa", "on"], ["-fa", "off"], ["--flash-attn", "auto"], ["--n-gpu-layers", "0", "-fa"]):
        assert ok("-m", m, "--raw", "-p", "Once upon a time", "-n", "8", "--temp", "0", "--cpu", *fa).stdout == plain
    # --repeat-last-n 0 turns the repetition penalty off: the same as no penalty
    pen = ["--repeat-penalty", "1.8"]
    base = ok("-m", m, "--raw", "-p", "Once upon a time", "-n", "12", "--temp", "0", "--cpu").stdout
    off = ok("-m", m, "--raw", "-p", "Once upon a time", "-n", "12", "--temp", "0", "--cpu", *pen,
             "--repeat-last-n", "0").stdout
    on = ok("-m", m, "--raw", "-p", "Once upon a time", "-n", "12", "--temp", "0", "--cpu", *pen).stdout
    assert off == base and on != base


def test_the_llama_cli_qwen_command_line(tmp_path):
    """llama-cli -m MODEL -n 512 -co -i -if -f prompts/chat-with-qwen.txt --in-prefix "<|im_start|>user\n"
    --in-suffix "<|im_end|>\n<|im_start|>assistant\n" -ngl 24 -fa, with ./qwen in its place: a raw session whose
    turns are the prompt file, then PREFIX + line + SUFFIX, each answered as a continuation of the whole text."""
    prompt = tmp_path / "chat-with-qwen.txt"
    prompt.write_text("You are a helpful assistant.")  # llama.cpp's prompts/chat-with-qwen.txt
    m = model("tiny-qwen2")
    args = ["-m", m, "-n", "16", "-co", "-i", "-if", "-f", prompt, "--in-prefix", r"<|im_start|>user\n",
            "--in-suffix", r"<|im_end|>\n<|im_start|>assistant\n", "-ngl", "24", "-fa", "--temp", "0", "--cpu"]
    p = ok(*args, stdin="Hello\nHow are you?\n".encode())
    answers = p.stdout.decode("utf-8", "replace").split("\n")
    assert len(answers) == 3 and answers[2] == "", answers  # two answers, each ends with a newline
    # the first turn is the completion of exactly this text (the escapes read, the special tokens real)
    text = "You are a helpful assistant.<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    first = ok("-m", m, "--raw", "-p", text, "-n", "16", "--temp", "0", "--cpu").stdout.decode("utf-8", "replace")
    assert answers[0] == first.rstrip("\n") if first.endswith("\n") else answers[0] == first
    # without -if the prompt file itself is answered first; /reset starts over from it
    p = ok(*[a for a in args if a != "-if"], stdin=b"Hello\n/reset\nHello\n")
    lines = p.stdout.decode("utf-8", "replace").split("\n")
    assert len(lines) == 4 and lines[1] == lines[2], lines


# ---- --batch --parallel: continuous batching ----------------------------------------------------------------

def batch_lines(tmp_path, objs):
    f = tmp_path / "prompts.jsonl"
    f.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return f


def test_batch_parallel_equals_one_at_a_time(tmp_path):
    # 20 prompts of mixed lengths, greedy and seeded, with a KV pool so small that sequences get preempted: every
    # answer is the one the prompt gets alone (--parallel 1), and they come out in input order.
    words = "the cat sat on a mat while 你好 rain fell and then".split()
    objs = []
    for i in range(20):
        text = " ".join(words[(i * 7 + k) % len(words)] for k in range(1 + (i * 13) % 40))
        o = {"prompt": f"{i}: {text}", "max_tokens": 20 + (i * 7) % 40}
        if i % 3 == 1:
            o.update(temperature=0.9, top_k=20, seed=100 + i)
        else:
            o["temperature"] = 0
        objs.append(o)
    f = batch_lines(tmp_path, objs)
    alone = ok("-m", model("tiny-qwen2"), "--batch", f, "--cpu", "--parallel", "1", "-c", "160")
    # 0.0001 GiB of fp32 KV for tiny-qwen2 is 13 blocks (208 tokens), far fewer than 8 prompts of up to 160 need
    together = ok("-m", model("tiny-qwen2"), "--batch", f, "--cpu", "--parallel", "8", "-c", "160",
                  "--kv-memory", "0.0001", "--verbose")
    a = [json.loads(line) for line in alone.stdout.decode().splitlines()]
    b = [json.loads(line) for line in together.stdout.decode().splitlines()]
    assert len(a) == len(b) == 20
    assert [r["prompt"] for r in b] == [o["prompt"] for o in objs]
    assert a == b
    assert re.search(rb"8 at once, [1-9]\d* preemptions", together.stderr), together.stderr


def test_batch_parallel_and_kv_memory_errors(tmp_path):
    f = batch_lines(tmp_path, [{"prompt": "hi"}])
    for bad in ("0", "-1", "x", "1,2", "2000"):
        p = run("-m", model("tiny-qwen2"), "--batch", f, "--cpu", "--parallel", bad)
        assert p.returncode == 2, (bad, p.stderr)
        assert p.stderr.decode().count("\n") == 1, p.stderr
    p = run("-m", model("tiny-qwen2"), "--batch", f, "--cpu", "--kv-memory", "0.00001", "-c", "512")
    assert p.returncode == 2
    assert b"less than one context of 512 tokens" in p.stderr
    p = run("-m", model("tiny-qwen2"), "--cpu", "-p", "hi", "--parallel", "4")
    assert p.returncode == 2 and b"--parallel goes with --batch or --bench" in p.stderr
    p = run("-m", model("tiny-qwen2"), "--cpu", "-p", "hi", "--kv-memory", "1")
    assert p.returncode == 2 and b"--kv-memory goes with --batch" in p.stderr


def test_bench_parallel_reports_each_batch_size():
    p = ok("--bench", model("tiny-qwen3"), "--cpu", "-t", "1", "--parallel", "1,3", "--json")
    r = json.loads(p.stdout)
    assert [x["test"] for x in r["results"]] == ["prefill 1x128", "decode x1 @128", "prefill 3x128", "decode x3 @128"]
    assert [x["batch"] for x in r["parallel"]] == [1, 3]
    for x in r["parallel"]:
        assert x["decode_tok_s"] > 0
        assert math.isclose(x["ms_per_step"], 1e3 * x["batch"] / x["decode_tok_s"], rel_tol=1e-3)
    table = ok("--bench", model("tiny-qwen3"), "--cpu", "-t", "1", "--parallel", "2").stdout.decode()
    assert "decode x2 @128" in table
