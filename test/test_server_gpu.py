"""qwen-server on its GPU engine: the same requests answered by the GPU engine and by the CPU engine.

It starts build/qwen-server_emu (server.cu built against the emulated device of test/emu, so the GPU path runs on
every x86-64 machine), or ./qwen-server itself on a machine with a GPU, next to ./qwen-server --cpu. On the tiny
model the two engines' logits agree to ~1e-5 and greedy answers are the same.
"""
import json
from pathlib import Path

import pytest

from test_server import ROOT, Server, parse_events, post, sse_request

EMU = Path(ROOT) / "build" / "qwen-server_emu"
HAS_GPU = Path("/dev/nvidia0").exists()
GPU_SERVER = Path(ROOT) / "qwen-server" if HAS_GPU else EMU

if not GPU_SERVER.exists():
    pytest.skip("no GPU and no emulated server build (make build/qwen-server_emu, x86-64 only)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def servers():
    gpu, cpu = Server("server-gpu", binary=str(GPU_SERVER), cpu=False), Server("server-cpu-ref")
    yield gpu, cpu
    assert gpu.stop() == 0, gpu.log_text()
    assert cpu.stop() == 0, cpu.log_text()


def test_gpu_server_uses_the_gpu_engine(servers):
    gpu, _ = servers
    log = gpu.log_text()
    assert "cuda engine" in log and "running on the CPU" not in log, log


@pytest.mark.parametrize("path,body", [
    ("/", {"prompt": "你好", "history": []}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell me a story"}], "temperature": 0,
                              "max_tokens": 12}),
    ("/v1/completions", {"prompt": "Once upon a time", "temperature": 0, "max_tokens": 12}),
])
def test_gpu_and_cpu_servers_answer_alike(servers, path, body):
    gpu, cpu = servers
    a, b = post(gpu.url + path, body), post(cpu.url + path, body)
    assert a[0] == b[0] == 200, (a, b)
    key = {"/": "response", "/v1/chat/completions": "choices", "/v1/completions": "choices"}[path]
    assert a[2][key] == b[2][key]


def test_gpu_server_streams_what_it_answers(servers):
    gpu, _ = servers
    body = {"messages": [{"role": "user", "content": "Count to ten."}], "temperature": 0, "max_tokens": 12}
    status, headers, chunks = sse_request(gpu, "/v1/chat/completions", body, accept_gzip=True)
    assert status.endswith("200 OK") and "content-encoding" not in headers
    events = parse_events(b"".join(c for _, c in chunks))
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    whole = post(gpu.url + "/v1/chat/completions", body)[2]["choices"][0]["message"]["content"]
    assert text == whole


# ---- the API's features on the GPU engine: the same answers as the CPU engine ----------------------------------

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                           "n": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["name", "n"], "additionalProperties": False}


def test_gpu_server_structured_output_and_tool_calls(servers):
    """A grammar's token mask on the device: the same seeded answer as the CPU server's, valid under the schema;
    a forced tool call the same way."""
    jsonschema = pytest.importorskip("jsonschema")
    gpu, cpu = servers
    body = {"messages": [{"role": "user", "content": "JSON"}], "max_tokens": 120, "seed": 3, "temperature": 4,
            "top_p": 1, "top_k": 0, "response_format": {"type": "json_schema", "json_schema": {"name": "s",
                                                                                             "schema": SCHEMA}}}
    a, b = post(gpu.url + "/v1/chat/completions", body), post(cpu.url + "/v1/chat/completions", body)
    assert a[0] == b[0] == 200, (a, b)
    assert a[2]["choices"] == b[2]["choices"] and a[2]["choices"][0]["finish_reason"] == "stop"
    jsonschema.validate(json.loads(a[2]["choices"][0]["message"]["content"]), SCHEMA)
    status, _, chunks = sse_request(gpu, "/v1/chat/completions", body)
    events = parse_events(b"".join(c for _, c in chunks))
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == a[2]["choices"][0]["message"]["content"]


def test_gpu_server_logprobs_n_and_sampling_fields(servers):
    """Logprobs computed on the device equal the CPU's to the engines' agreement (the GPU engine's bf16 GEMM inputs
    move these logits by ~0.02; the kernel itself matches the CPU's log-softmax to 1e-6 in test_gpu.cu); n choices
    with the logit bias and the penalties draw the same tokens."""
    gpu, cpu = servers
    body = {"messages": [{"role": "user", "content": "Tell me"}], "max_tokens": 8, "temperature": 0,
            "logprobs": True, "top_logprobs": 4}
    a, b = post(gpu.url + "/v1/chat/completions", body)[2], post(cpu.url + "/v1/chat/completions", body)[2]
    la, lb = a["choices"][0]["logprobs"]["content"], b["choices"][0]["logprobs"]["content"]
    assert [e["bytes"] for e in la] == [e["bytes"] for e in lb] and len(la) > 0
    for x, y in zip(la, lb):
        assert abs(x["logprob"] - y["logprob"]) < 0.05
        assert [t["bytes"] for t in x["top_logprobs"]] == [t["bytes"] for t in y["top_logprobs"]]
        assert all(abs(s["logprob"] - t["logprob"]) < 0.05 for s, t in zip(x["top_logprobs"], y["top_logprobs"]))
    streamed = []
    for e in parse_events(b"".join(c for _, c in sse_request(gpu, "/v1/chat/completions", body)[2]))[:-1]:
        lp = json.loads(e)["choices"][0]["logprobs"]
        streamed += lp["content"] if lp else []
    # the same tokens; the first one's logits now come from a decode step (the prompt is in the KV cache), not
    # from the prefill, whose GEMMs round differently
    assert [e["bytes"] for e in streamed] == [e["bytes"] for e in la]
    assert all(abs(x["logprob"] - y["logprob"]) < 0.05 for x, y in zip(streamed, la))
    # greedy, so that the engines' small logit differences cannot move a draw
    body = {"messages": [{"role": "user", "content": "Story"}], "max_tokens": 10, "temperature": 0, "n": 2,
            "logit_bias": {"300": 8, "189": -5}, "frequency_penalty": 1.5, "repetition_penalty": 1.2,
            "repeat_last_n": 8}
    a, b = post(gpu.url + "/v1/chat/completions", body)[2], post(cpu.url + "/v1/chat/completions", body)[2]
    assert len(a["choices"]) == 2 and a["choices"] == b["choices"] and a["usage"] == b["usage"]
    plain = post(cpu.url + "/v1/chat/completions", {"messages": body["messages"], "max_tokens": 10,
                                                     "temperature": 0})[2]
    assert a["choices"][0]["message"] != plain["choices"][0]["message"]  # the fields did change the answer
