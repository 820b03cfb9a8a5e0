"""The ./qwen command line on its GPU engine, end to end.

It runs build/qwen_emu, the same main.cu built against the emulated device of test/emu (so the GPU path runs on
every x86-64 machine), or ./qwen itself on a machine with a GPU. Greedy text is compared with Hugging Face's
where the recorded margins are clear (the GPU engine's logits differ from the fp32 reference by ~1e-5, which
can flip a near tie), and with the CPU engine's output.
"""
import platform
import re
from pathlib import Path

import pytest

import test_cli
from test_cli import ROOT, TINY, expected_bytes, model, reference, stop_ids

EMU = ROOT / "build" / "qwen_emu"
HAS_GPU = Path("/dev/nvidia0").exists()


def gpu_binary():
    if HAS_GPU:
        return ROOT / "qwen"
    if EMU.exists():
        return EMU
    reason = "x86-64 only" if platform.machine() != "x86_64" else "run make build/qwen_emu"
    pytest.skip(f"no GPU and no emulated build ({reason})")


def run_gpu(*args, **kw):
    """test_cli.run with the GPU binary (ASan is on in the emulated one: any finding fails the run)."""
    saved = test_cli.QWEN
    test_cli.QWEN = gpu_binary()
    try:
        return test_cli.ok(*args, **kw)
    finally:
        test_cli.QWEN = saved


def clear_prefix(case, n):
    """The leading greedy tokens (at most n) whose recorded margin over the runner-up exceeds 0.05."""
    k = 0
    while k < min(n, len(case["greedy_ids"])) and case["greedy_margins"][k] > 0.05:
        k += 1
    return k


@pytest.mark.parametrize("name", TINY)
def test_gpu_raw_greedy_matches_hf(name):
    cases = [c for c in reference(name) if c["mode"] == "raw" and clear_prefix(c, 12) > 0]
    assert len(cases) >= 3, "too few raw cases with a clear greedy prefix to check"
    for case in cases:
        k = clear_prefix(case, 12)
        p = run_gpu("-m", model(name), "--raw", "--temp", "0", "-n", k, "-p", case["prompt"])
        # generation ends early at a stop id, which is not printed; otherwise after exactly k tokens
        stopped = any(i in stop_ids(name) for i in case["greedy_ids"][:k])
        assert p.stdout == expected_bytes(name, case["greedy_ids"][:k]), case["prompt"]
        assert (b"tokens generated (stop)" in p.stderr) == stopped, (case["prompt"], p.stderr)
        assert f"{k} tokens generated".encode() in p.stderr or stopped, p.stderr


@pytest.mark.parametrize("name", TINY)
def test_gpu_engine_is_used_and_reports_its_memory(name):
    p = run_gpu("-m", model(name), "--temp", "0", "-n", "4", "--verbose", "-p", "hi")
    err = p.stderr.decode()
    assert "engine cuda" in err, err
    assert "cuda: weights" in err and "KV cache" in err and "scratch" in err, err
    assert "running on the CPU" not in err


@pytest.mark.parametrize("name", TINY)
def test_gpu_chat_greedy_matches_hf_and_the_cpu_engine(name):
    checked = 0
    for case in [c for c in reference(name) if c["mode"] == "chat"]:
        k = clear_prefix(case, 12)
        if k < len(case["greedy_ids"]) and k < 12 or k == 0:
            continue  # a near tie inside the answer: the engines may part there
        args = ["-m", model(name), "--temp", "0", "-n", k, "-p", case["prompt"]]
        p = run_gpu(*args)
        assert p.stdout == test_cli.ok(*args, "--cpu").stdout, case["prompt"]
        if b"(stop)" not in p.stderr:
            assert p.stdout == expected_bytes(name, case["greedy_ids"][:k]) + b"\n", case["prompt"]
        checked += 1
    assert checked >= 1


def test_gpu_sampling_is_reproducible_with_a_seed():
    # the default filters (top-k 20, top-p 0.8) and plain temperature: both device sampling paths
    for extra in ([], ["--top-k", "0", "--top-p", "1"], ["--top-k", "0", "--top-p", "0.9", "--min-p", "0.05"]):
        args = ["-m", model("tiny-qwen2"), "--temp", "1.0", "-n", "12", "-p", "hi", *extra]
        a = run_gpu(*args, "-s", "7").stdout
        assert a == run_gpu(*args, "-s", "7").stdout, extra
        assert len({run_gpu(*args, "-s", str(s)).stdout for s in range(4)}) > 1, extra


def test_gpu_interactive_session_reuses_the_cache():
    # turn 2's prompt is the whole conversation; the rows of turn 1 come from the KV cache (a prefill at pos > 0)
    stdin = "Once upon a time\nhi\n".encode()
    args = ["-m", model("tiny-qwen2"), "-i", "--temp", "0", "-n", "6", "--verbose"]
    p = run_gpu(*args, stdin=stdin)
    err = p.stderr.decode()
    assert re.search(r"turn 2: prompt \d+ tokens \([1-9]\d* from the cache\)", err), err
    assert p.stdout == test_cli.ok(*args, "--cpu", stdin=stdin).stdout


def test_gpu_json_schema_answer_validates(tmp_path):
    """--json-schema on the GPU engine: the token mask goes to the device each step; the answer validates."""
    jsonschema = pytest.importorskip("jsonschema")
    import json
    schema = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                               "b": {"type": "string", "enum": ["x", "yz"]}},
              "required": ["a", "b"], "additionalProperties": False}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schema))
    p = run_gpu("-m", model("tiny-qwen2"), "-p", "JSON", "--json-schema", path, "-n", "80", "-s", "2", "--temp", "4",
                "--top-k", "0", "--top-p", "1", "--verbose", "-ngl", "99", "-fa")
    jsonschema.validate(json.loads(p.stdout.decode()), schema)
    assert "(stop)" in p.stderr.decode() and "flash attention is always on" in p.stderr.decode()
