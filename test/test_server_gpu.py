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
