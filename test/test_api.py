"""The OpenAI API that agents and chat UIs rely on, end to end with the `openai` client on the CPU server:
structured output (JSON mode, JSON Schema, pydantic models, regex, choices, GBNF), tool calls, Qwen3 reasoning,
logprobs, n, the extra sampling fields, API keys, CORS, /metrics, /tokenize and /detokenize, and the 400s.

The tiny random models never write <tool_call> or <think> by themselves: their output is steered with the
grammar engine (a `grammar` field, or tool_choice "required"), which is what drives the parsers here; the
parsers' own cases are in test/test_generate.cpp. Prompts with tools are compared with the Jinja rendering of
the real Qwen2.5 and Qwen3 templates (test_tokenizer_hf.py does it for many random conversations).
"""
import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_server import ARTIFACTS, MODEL, ROOT, SERVER, Server, error_of, get_json, parse_events, post, sse_request

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pydantic = pytest.importorskip("pydantic")

ROOT = Path(ROOT)
# Free sampling: the grammar's mask does all the work on a random model (hot: the tiny model is very sure of itself).
FREE = {"temperature": 4, "top_p": 1}
FREE_EXTRA = {"top_k": 0}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                                   "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def chat_model(name, template_source):
    """A tiny checkpoint with a real chat template: tiny-qwen3 (Qwen3's template) or tiny-qwen2 (Qwen2.5's)."""
    out = ROOT / "build" / f"{name}.bin"
    base = "tiny-qwen3" if "qwen3" in name else "tiny-qwen2"
    folder = ROOT / "build" / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(ROOT / "test" / "data" / base, folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = template_source
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), str(folder), str(out)], check=True,
                   capture_output=True)
    return str(out)


QWEN3_TEMPLATE = json.loads((ROOT / "test/data/qwen-tokenizer/tokenizer_config.json").read_text())["chat_template"]
QWEN25_TEMPLATE = (ROOT / "test/data/chat-templates/Qwen2.5-7B-Instruct.jinja").read_text()


@pytest.fixture(scope="module")
def server():
    s = Server("api")
    yield s
    assert s.stop() == 0, s.log_text()


@pytest.fixture(scope="module")
def qwen3():
    """Qwen3's real template (tools, thinking) on the tiny Qwen3 model; reasoning split out (the default)."""
    s = Server("api-qwen3", model=chat_model("tiny-qwen3-chat", QWEN3_TEMPLATE))
    yield s
    assert s.stop() == 0, s.log_text()


@pytest.fixture(scope="module")
def qwen25():
    s = Server("api-qwen25", model=chat_model("tiny-qwen25-chat", QWEN25_TEMPLATE))
    yield s
    assert s.stop() == 0, s.log_text()


def client_of(s, key="unused"):
    return openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0)


def chat(s, **body):
    status, _, out = post(s.url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], **body})
    assert status == 200, out
    return out


def param_of(status_and_body, status=400):
    error_of(status_and_body, status)
    return status_and_body[2]["error"]["param"]


def stream_events(s, path, body):
    status, _, chunks = sse_request(s, path, body)
    assert status.endswith("200 OK"), status
    events = parse_events(b"".join(c for _, c in chunks))
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


# ---- structured output -----------------------------------------------------------------------------------------

class Pet(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=10)
    age: int = pydantic.Field(ge=0, le=30)
    kind: str = pydantic.Field(json_schema_extra={"enum": ["cat", "dog", "fish"]})
    vaccinated: bool


def test_json_object_mode(server):
    client = client_of(server)
    for seed in range(3):
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "JSON please"}], seed=seed,
                                           response_format={"type": "json_object"}, max_tokens=900, **FREE,
                                           extra_body={**FREE_EXTRA, "frequency_penalty": 0})
        if r.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(r.choices[0].message.content), dict)
        else:  # the random model wrote a long string: the text so far is the start of an object
            assert r.choices[0].finish_reason == "length" and r.choices[0].message.content.startswith("{")


def test_json_schema_with_a_pydantic_model(server):
    """client.chat.completions.parse(response_format=PydanticModel): the answer parses into the model."""
    client = client_of(server)
    schema = Pet.model_json_schema()
    parsed = []
    for seed in range(4):
        r = client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "A pet?"}], seed=seed,
                                          response_format=Pet, max_tokens=300, **FREE, extra_body=FREE_EXTRA)
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "stop", msg.content
        assert isinstance(msg.parsed, Pet)
        jsonschema.validate(json.loads(msg.content), schema)
        parsed.append(msg.parsed)
    assert len({p.model_dump_json() for p in parsed}) > 1  # seeds give different pets
    # the beta path of older clients is the same call
    r = client.beta.chat.completions.parse(model="m", messages=[{"role": "user", "content": "A pet?"}], seed=9,
                                           response_format=Pet, max_tokens=300, **FREE, extra_body=FREE_EXTRA)
    assert isinstance(r.choices[0].message.parsed, Pet)


def test_json_schema_streamed_is_the_same_answer(server):
    schema = Pet.model_json_schema()
    body = {"messages": [{"role": "user", "content": "A pet?"}], "seed": 5, "max_tokens": 300, **FREE, **FREE_EXTRA,
            "response_format": {"type": "json_schema", "json_schema": {"name": "pet", "schema": schema}}}
    whole = chat(server, **body)["choices"][0]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in stream_events(server, "/v1/chat/completions",
                                                                                    {**body, "stream": True})
                   if e["choices"])
    assert text == whole["message"]["content"] and whole["finish_reason"] == "stop"
    jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize("field, value, check", [
    ("guided_regex", r"[a-c]{3}-\d{2}", lambda t: re.fullmatch(r"[a-c]{3}-\d{2}", t)),
    ("guided_choice", ["yes", "no", "maybe not"], lambda t: t in ("yes", "no", "maybe not")),
    ("grammar", 'root ::= "<" [0-9]{2,4} ">"', lambda t: re.fullmatch(r"<[0-9]{2,4}>", t)),
    ("guided_json", {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 3},
     lambda t: all(0 <= x <= 9 for x in json.loads(t)) and len(json.loads(t)) <= 3),
    ("json_schema", {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                     "additionalProperties": False}, lambda t: isinstance(json.loads(t)["ok"], bool)),
])
def test_vllm_and_llama_server_fields(server, field, value, check):
    for path, key in (("/v1/chat/completions", "message"), ("/v1/completions", "text")):
        for seed in range(3):
            body = {field: value, "seed": seed, "max_tokens": 200, **FREE, **FREE_EXTRA}
            if key == "text":
                status, _, out = post(server.url + path, {"prompt": "Answer:", **body})
                assert status == 200, out
                text = out["choices"][0]["text"]
            else:
                out = chat(server, **body)
                text = out["choices"][0]["message"]["content"]
            assert out["choices"][0]["finish_reason"] == "stop", out
            assert check(text), text


def test_max_tokens_before_the_grammar_ends_gives_length_and_the_text_so_far(server):
    out = chat(server, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema":
                                        Pet.model_json_schema()}}, max_tokens=3, seed=1, **FREE)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 3
    assert choice["message"]["content"].startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice["message"]["content"])


@pytest.mark.parametrize("body, param, message", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "integer", "multipleOf": 3}}}}}},
     "response_format", "json schema: /properties/a: unsupported keyword 'multipleOf'"),
    ({"guided_json": {"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}}, "guided_json",
     "$ref '#/$defs/nope' does not resolve"),
    ({"grammar": 'root ::= "a" item\nitem ::= [b-'}, "grammar", "line 2 col"),
    ({"grammar": "root ::= x\nx ::= \"(\" x \")\""}, "grammar", "can never end"),
    ({"guided_regex": "(a|b"}, "guided_regex", "'(' is not closed"),
    ({"guided_choice": []}, "guided_choice", "non-empty list"),
    ({"response_format": {"type": "xml"}}, "response_format", "text, json_object or json_schema"),
    ({"response_format": {"type": "json_object"}, "guided_regex": "a"}, "guided_regex", "give one"),
    ({"json_schema": "{not json"}, "json_schema", "json schema: line 1 col 2"),
])
def test_bad_grammars_and_schemas_are_400_with_the_place(server, body, param, message):
    got = post(server.url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], **body})
    assert param_of(got) == param
    assert message in got[2]["error"]["message"], got[2]


def test_a_bound_grammar_is_reused(server):
    """The second request with the same schema finds it bound (the cache): its answer is the same, and quicker
    to start when binding costs anything (not timed here: the tiny vocabulary binds in microseconds)."""
    body = {"guided_json": Pet.model_json_schema(), "seed": 3, "max_tokens": 200, **FREE, **FREE_EXTRA}
    assert chat(server, **body)["choices"] == chat(server, **body)["choices"]


# ---- tool calls --------------------------------------------------------------------------------------------------

def jinja_render(template_source, **kw):
    from test_tokenizer_hf import jinja_template
    return jinja_template(template_source).render(**kw)


def hf_token_count(text, base):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(ROOT / "test" / "data" / base / "tokenizer.json"))
    return len(tok.encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize("which", ["qwen3", "qwen25"])
def test_tool_call_round_trip(which, request):
    """tool_choice "required": a call valid under the tool's schema, finish_reason tool_calls; then the call and
    its result (role tool) go back and the prompt is the template's own rendering, token for token."""
    s = request.getfixturevalue(which)
    client = client_of(s)
    messages = [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather in Paris?"}]
    kw = {"model": "m", "tools": [WEATHER, TIME], "tool_choice": "required", "parallel_tool_calls": False,
          "max_tokens": 200, "seed": 4, **FREE, "extra_body": {**FREE_EXTRA, "enable_thinking": False}}
    r = client.chat.completions.create(messages=messages, **kw)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_") and call.function.name in ("get_weather", "get_time")
    args = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        jsonschema.validate(args, WEATHER["function"]["parameters"])

    # streamed: the client reassembles delta.tool_calls into the same call
    stream = client.chat.completions.create(messages=messages, stream=True, **kw)
    calls, finish = {}, None
    for chunk in stream:
        d = chunk.choices[0].delta
        for tc in d.tool_calls or []:
            c = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            c["id"] += tc.id or ""
            c["name"] += tc.function.name or ""
            c["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and list(calls) == [0]
    assert (calls[0]["name"], calls[0]["arguments"]) == (call.function.name, call.function.arguments)

    # the round trip: the call, its result, and the answer after it
    follow = messages + [choice.message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    r2 = client.chat.completions.create(model="m", messages=follow, tools=[WEATHER, TIME], max_tokens=8, temperature=0,
                                        extra_body={"enable_thinking": False})
    assert r2.choices[0].finish_reason in ("stop", "length")
    template = QWEN3_TEMPLATE if which == "qwen3" else QWEN25_TEMPLATE
    jinja_msgs = json.loads(json.dumps(follow))
    jinja_msgs[2].setdefault("content", "")  # null content is empty text (the templates cannot take None)
    for c in jinja_msgs[2]["tool_calls"]:  # vLLM's way: arguments rendered as the object
        c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    expected = jinja_render(template, messages=jinja_msgs, tools=[WEATHER, TIME], add_generation_prompt=True,
                            enable_thinking=False)
    status, _, rendered = post(s.url + "/apply-template", {"messages": follow, "tools": [WEATHER, TIME],
                                                           "enable_thinking": False})
    assert status == 200 and rendered["prompt"] == expected
    base = "tiny-qwen3" if which == "qwen3" else "tiny-qwen2"
    assert r2.usage.prompt_tokens == hf_token_count(expected, base) == rendered["n_tokens"]


def test_named_tool_choice_calls_that_function(qwen3):
    for seed in range(3):
        out = chat(qwen3, tools=[TIME, WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                   max_tokens=300, seed=seed, enable_thinking=False, **FREE, **FREE_EXTRA)
        choice = out["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        calls = choice["message"]["tool_calls"]
        assert len(calls) == 1 and calls[0]["function"]["name"] == "get_weather"
        jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), WEATHER["function"]["parameters"])


def test_required_with_thinking_on_calls_the_tool(qwen3):
    """Qwen3 thinking on: the forced output may reason first (tool_calls_gbnf's optional <think> block), then the
    call comes. '<' and '/' are pushed up so the random model closes whatever it opens."""
    for seed in range(3):
        out = chat(qwen3, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, max_tokens=400,
                   seed=seed, logit_bias={"27": 3, "14": 6}, **FREE, **FREE_EXTRA)
        choice = out["choices"][0]
        assert choice["finish_reason"] == "tool_calls", choice
        assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["get_weather"]


def test_reasoning_then_a_call(qwen3):
    grammar = ('root ::= "<think>\\nI need the weather.\\n</think>\\n\\n<tool_call>\\n{\\"name\\": '
               '\\"get_weather\\", \\"arguments\\": {\\"city\\": \\"Oslo\\", \\"unit\\": \\"c\\"}}\\n</tool_call>"')
    m = chat(qwen3, tools=[WEATHER], grammar=grammar, max_tokens=200, temperature=0)["choices"][0]["message"]
    assert m["reasoning_content"] == "I need the weather." and m["content"] is None
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"]] == \
        [("get_weather", '{"city": "Oslo", "unit": "c"}')]


TWO_CALLS = ('root ::= "<tool_call>\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"Oslo\\", '
             '\\"unit\\": \\"c\\"}}\\n</tool_call>\\n<tool_call>\\n{\\"name\\": \\"get_time\\", \\"arguments\\": {}}'
             '\\n</tool_call>"')
MALFORMED = 'root ::= "<tool_call>\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": }\\n</tool_call>"'


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_calls_and_malformed_calls_from_the_model(qwen3, stream):
    """Model output with two calls (forced by a grammar) gives two calls; a call whose JSON is broken comes back
    as content, never a 500."""
    client = client_of(qwen3)

    def ask(grammar):
        kw = {"model": "m", "messages": [{"role": "user", "content": "go"}], "tools": [WEATHER, TIME],
              "max_tokens": 200, "temperature": 0, "extra_body": {"grammar": grammar, "enable_thinking": False}}
        if not stream:
            r = client.chat.completions.create(**kw)
            m = r.choices[0].message
            return m.content, [(c.function.name, c.function.arguments) for c in m.tool_calls or []], \
                r.choices[0].finish_reason
        content, calls, finish = "", {}, None
        for chunk in client.chat.completions.create(stream=True, **kw):
            d = chunk.choices[0].delta
            content += d.content or ""
            for tc in d.tool_calls or []:
                c = calls.setdefault(tc.index, ["", ""])
                c[0] += tc.function.name or ""
                c[1] += tc.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
        return content or None, [tuple(calls[i]) for i in sorted(calls)], finish

    content, calls, finish = ask(TWO_CALLS)
    assert content is None and finish == "tool_calls"
    assert calls == [("get_weather", '{"city": "Oslo", "unit": "c"}'), ("get_time", "{}")]
    content, calls, finish = ask(MALFORMED)
    assert calls == [] and finish == "stop"
    assert content == '<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>'


def test_tool_request_errors(qwen3, server):
    url = qwen3.url + "/v1/chat/completions"
    ok = [{"role": "user", "content": "hi"}]
    assert param_of(post(url, {"messages": ok, "tools": [WEATHER], "tool_choice": {"type": "function",
                                                                                    "function": {"name": "nope"}}})) \
        == "tool_choice"
    assert param_of(post(url, {"messages": ok, "tool_choice": "required"})) == "tool_choice"
    assert param_of(post(url, {"messages": ok, "tools": [WEATHER], "tool_choice": "sometimes"})) == "tool_choice"
    assert param_of(post(url, {"messages": ok, "tools": [WEATHER], "tool_choice": 5})) == "tool_choice"
    assert param_of(post(url, {"messages": ok, "tools": {"a": 1}})) == "tools"
    assert param_of(post(url, {"messages": ok, "tools": [{"type": "function", "function": {"name": "bad name!"}}]})) \
        == "tools"
    assert param_of(post(url, {"messages": ok, "tools": [WEATHER, WEATHER]})) == "tools"
    bad_schema = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"type": "string", "format": "email"}}}}}
    got = post(url, {"messages": ok, "tools": [bad_schema], "tool_choice": "required"})
    assert param_of(got) == "tools" and "tool 'f': json schema: /properties/x/format" in got[2]["error"]["message"]
    got = post(url, {"messages": ok, "tools": [WEATHER], "tool_choice": "required",
                     "response_format": {"type": "json_object"}})
    assert param_of(got) == "tool_choice"
    bad_args = [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]
    assert param_of(post(url, {"messages": bad_args})) == "messages"
    # a template without tools (tiny-qwen2's plain ChatML) says so
    got = post(server.url + "/v1/chat/completions", {"messages": ok, "tools": [WEATHER]})
    assert param_of(got) == "tools" and "no tool calling" in got[2]["error"]["message"]


# ---- Qwen3 reasoning ---------------------------------------------------------------------------------------------

THINKING = 'root ::= "<think>\\nFirst, 2 + 2.\\n\\n</think>\\n\\nIt is 4."'


def test_reasoning_goes_to_reasoning_content(qwen3):
    client = client_of(qwen3)
    kw = {"model": "m", "messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 100, "temperature": 0,
          "extra_body": {"grammar": THINKING}}
    m = client.chat.completions.create(**kw).choices[0].message
    assert (m.model_extra["reasoning_content"], m.content) == ("First, 2 + 2.", "It is 4.")
    reasoning, content = "", ""
    for chunk in client.chat.completions.create(stream=True, **kw):
        d = chunk.choices[0].delta
        reasoning += (d.model_extra or {}).get("reasoning_content") or ""
        content += d.content or ""
    assert (reasoning, content) == ("First, 2 + 2.", "It is 4.")
    # sent back, the reasoning of an earlier turn is dropped as the template drops it
    follow = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "It is 4.",
                                                     "reasoning_content": "First, 2 + 2."},
              {"role": "user", "content": "And 3+3?"}]
    status, _, rendered = post(qwen3.url + "/apply-template", {"messages": follow})
    assert status == 200
    assert rendered["prompt"] == jinja_render(QWEN3_TEMPLATE, messages=follow, add_generation_prompt=True)


def test_reasoning_format_none_keeps_it_inline(qwen3):
    s = Server("api-qwen3-inline", "--reasoning-format", "none", model=str(ROOT / "build" / "tiny-qwen3-chat.bin"))
    try:
        out = chat(s, grammar=THINKING, max_tokens=100, temperature=0)
        m = out["choices"][0]["message"]
        assert m["content"] == "<think>\nFirst, 2 + 2.\n\n</think>\n\nIt is 4." and "reasoning_content" not in m
    finally:
        assert s.stop() == 0


# ---- logprobs ----------------------------------------------------------------------------------------------------

def log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def test_logprobs_match_the_hugging_face_logits(server):
    """Completions with logprobs on the reference prompts: the chosen token's logprob and the top 5 equal the
    log-softmax of HF's fp32 logits (test/data/tiny-qwen2/reference_logits.f32) at every greedy step."""
    import struct
    ref = json.loads((ROOT / "test/data/tiny-qwen2/reference.json").read_text())
    blob = (ROOT / "test/data/tiny-qwen2/reference_logits.f32").read_bytes()
    checked = 0
    for case in ref["cases"]:
        if case["mode"] != "raw":
            continue
        rows, cols = case["logits_shape"]
        n_in = len(case["input_ids"])
        status, _, out = post(server.url + "/v1/completions", {"prompt": case["prompt"], "max_tokens": 16,
                                                               "temperature": 0, "logprobs": 5})
        assert status == 200, out
        lp = out["choices"][0]["logprobs"]
        for t, (tok_lp, top) in enumerate(zip(lp["token_logprobs"], lp["top_logprobs"])):
            if case["greedy_margins"][t] < 1e-3:
                break  # a near tie: the paths may part here
            off = case["logits_offset_bytes"] + 4 * cols * (n_in - 1 + t)
            row = log_softmax(struct.unpack(f"<{cols}f", blob[off:off + 4 * cols]))
            chosen = case["greedy_ids"][t]
            assert abs(tok_lp - row[chosen]) < 1e-4, (case["prompt"], t)
            # top_logprobs is keyed by token text (tokens of stray bytes share U+FFFD): each value is one of the
            # five largest, the largest among them
            best = sorted(row, reverse=True)[:5]
            assert max(top.values()) == pytest.approx(best[0], abs=1e-4)
            assert all(any(abs(v - b) < 1e-4 for b in best) for v in top.values())
            checked += 1
    assert checked >= 40


def test_chat_logprobs_streamed_and_not(server):
    body = {"messages": [{"role": "user", "content": "Tell me"}], "logprobs": True, "top_logprobs": 3,
            "max_tokens": 12, "seed": 7, "temperature": 0.9, "top_p": 1, "top_k": 0}
    whole = chat(server, **body)["choices"][0]
    entries = whole["logprobs"]["content"]
    assert 0 < len(entries) <= 12
    for e in entries:
        assert set(e) == {"token", "logprob", "bytes", "top_logprobs"} and len(e["top_logprobs"]) == 3
        tops = [t["logprob"] for t in e["top_logprobs"]]
        assert tops == sorted(tops, reverse=True) and sum(math.exp(x) for x in tops) <= 1 + 1e-6
        assert e["logprob"] <= tops[0] + 1e-6
        for t in e["top_logprobs"]:  # the chosen token among the top ones has the same value
            if t["bytes"] == e["bytes"]:
                assert t["logprob"] == pytest.approx(e["logprob"], abs=1e-6)
    assert bytes(b for e in entries for b in e["bytes"]).decode("utf-8", "replace") == whole["message"]["content"]
    streamed = []
    for ev in stream_events(server, "/v1/chat/completions", {**body, "stream": True}):
        if ev["choices"] and ev["choices"][0]["logprobs"]:
            streamed += ev["choices"][0]["logprobs"]["content"]
    assert streamed == entries
    # the client reads them
    r = client_of(server).chat.completions.create(model="m", logprobs=True, top_logprobs=2, max_tokens=4,
                                                  messages=body["messages"], temperature=0)
    assert len(r.choices[0].logprobs.content[0].top_logprobs) == 2


def test_logprobs_ignore_penalties_and_temperature(server):
    """The first token's logprobs come from the model's logits alone: the same whatever the sampling settings."""
    base = {"messages": [{"role": "user", "content": "Same prompt"}], "logprobs": True, "top_logprobs": 5,
            "max_tokens": 1}
    a = chat(server, temperature=0, **base)["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    b = chat(server, temperature=1.7, repetition_penalty=1.5, presence_penalty=1, frequency_penalty=2,
             logit_bias={"100": 50}, seed=3, **base)["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert [(x["token"], x["logprob"]) for x in a] == [(x["token"], x["logprob"]) for x in b]


# ---- n, the extra sampling fields --------------------------------------------------------------------------------

def test_n_choices_are_reproducible_and_counted(server):
    body = {"messages": [{"role": "user", "content": "Story"}], "max_tokens": 10, "temperature": 10, "top_k": 0,
            "top_p": 1, "seed": 40}
    out = chat(server, n=3, **body)
    texts = [c["message"]["content"] for c in out["choices"]]
    assert [c["index"] for c in out["choices"]] == [0, 1, 2] and len(set(texts)) == 3
    assert out == {**out, "choices": chat(server, n=3, **body)["choices"]}  # the same seed, the same three
    singles = [chat(server, **{**body, "seed": 40 + i}) for i in range(3)]  # choice i is seed + i
    assert texts == [s["choices"][0]["message"]["content"] for s in singles]
    assert out["usage"]["completion_tokens"] == sum(s["usage"]["completion_tokens"] for s in singles)
    assert out["usage"]["prompt_tokens"] == singles[0]["usage"]["prompt_tokens"]
    streamed = ["", "", ""]
    for ev in stream_events(server, "/v1/chat/completions", {**body, "n": 3, "stream": True}):
        for c in ev["choices"]:
            streamed[c["index"]] += c["delta"].get("content", "")
    assert streamed == texts
    status, _, comp = post(server.url + "/v1/completions", {"prompt": "Once", "n": 2, **{k: v for k, v in body.items()
                                                                                         if k != "messages"}})
    assert status == 200 and len(comp["choices"]) == 2


def test_sampling_fields(server):
    greedy = {"messages": [{"role": "user", "content": "Go on"}], "max_tokens": 12, "temperature": 0}
    # logit_bias: +100 on a token makes greedy decoding pick it every time
    status, _, tok = post(server.url + "/detokenize", {"tokens": [300]})
    out = chat(server, logit_bias={"300": 100}, **greedy)
    assert out["choices"][0]["message"]["content"] == tok["content"] * out["usage"]["completion_tokens"] == \
        tok["content"] * 12
    # stop_token_ids: that token now ends the answer at once
    out = chat(server, logit_bias={"300": 100}, stop_token_ids=[300], **greedy)
    assert out["choices"][0]["finish_reason"] == "stop" and out["usage"]["completion_tokens"] == 1
    # min_tokens holds the stop tokens back until that many came
    out = chat(server, logit_bias={"300": 100}, stop_token_ids=[300], min_tokens=5, **greedy)
    assert out["choices"][0]["finish_reason"] == "stop" and out["usage"]["completion_tokens"] == 6
    # ignore_eos: the model's own stop token (<|im_end|>, pushed to the top) no longer ends the answer
    eos = {"511": 100}
    assert chat(server, logit_bias=eos, **greedy)["usage"]["completion_tokens"] == 1
    out = chat(server, logit_bias=eos, ignore_eos=True, **greedy)
    assert out["choices"][0]["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 12
    # llama.cpp's names
    a = chat(server, **{**greedy, "max_tokens": None}, n_predict=5, repeat_penalty=1.3, repeat_last_n=4)
    b = chat(server, **{**greedy, "max_tokens": 5}, repetition_penalty=1.3, repeat_last_n=4)
    assert a["choices"] == b["choices"] and a["usage"]["completion_tokens"] == 5
    # frequency_penalty changes a repetitive greedy answer (its tokens, seen through their bytes)
    def tokens(**kw):
        return [e["bytes"] for e in chat(server, logprobs=True, **greedy, **kw)["choices"][0]["logprobs"]["content"]]
    plain = tokens()
    assert len({bytes(b) for b in plain}) <= 3  # greedy on the random model repeats itself
    assert tokens(frequency_penalty=2) != plain


@pytest.mark.parametrize("field, value", [
    ("frequency_penalty", 2.5), ("frequency_penalty", "x"), ("repeat_penalty", 0), ("repeat_last_n", -2),
    ("logit_bias", [1]), ("logit_bias", {"abc": 1}), ("logit_bias", {"99999": 1}), ("logit_bias", {"5": 101}),
    ("logit_bias", {"5": "high"}), ("stop_token_ids", "x"), ("stop_token_ids", [1e9]), ("stop_token_ids", [-1]),
    ("ignore_eos", "no"), ("min_tokens", -1), ("min_tokens", 100), ("n", 0), ("n", 17), ("n", "3"),
    ("logprobs", "yes"), ("top_logprobs", 21), ("top_logprobs", 2), ("n_predict", 0), ("tools", "x"),
    ("response_format", "json"), ("guided_regex", 5), ("grammar", 7), ("parallel_tool_calls", "yes"),
])
def test_bad_fields_are_400_naming_the_field(server, field, value):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, field: value}
    got = post(server.url + "/v1/chat/completions", body)
    assert param_of(got) == field, got[2]
    assert field in got[2]["error"]["message"], got[2]


def test_completions_logprobs_limits(server):
    url = server.url + "/v1/completions"
    assert param_of(post(url, {"prompt": "x", "logprobs": 6})) == "logprobs"
    status, _, out = post(url, {"prompt": "x", "logprobs": 0, "max_tokens": 3, "temperature": 0})
    lp = out["choices"][0]["logprobs"]
    assert status == 200 and len(lp["tokens"]) == len(lp["token_logprobs"]) == 3 and lp["top_logprobs"] == [{}] * 3
    assert lp["text_offset"][0] == 0


def test_a_refused_request_leaves_the_kv_cache_alone(server):
    """Everything is checked before the engine sees a request: after a 400, a follow-up still reuses the cache of
    the conversation before it (the request log shows how many prompt tokens were new)."""
    convo = [{"role": "user", "content": "Remember this long sentence about cache reuse please."}]
    first = chat(server, messages=convo, max_tokens=4, temperature=0)
    convo += [{"role": "assistant", "content": first["choices"][0]["message"]["content"]},
              {"role": "user", "content": "next"}]
    assert param_of(post(server.url + "/v1/chat/completions", {"messages": convo, "logit_bias": {"5": 500}})) \
        == "logit_bias"
    assert param_of(post(server.url + "/v1/chat/completions", {"messages": convo, "grammar": "root ::= ("})) \
        == "grammar"
    total = chat(server, messages=convo, max_tokens=2, temperature=0)["usage"]["prompt_tokens"]
    # the line is written once the answer is sent: it may come a moment after the client has the answer
    deadline, lines = time.time() + 10, []
    while not lines and time.time() < deadline:
        lines = [line for line in server.log_text().splitlines()
                 if "/v1/chat/completions 200" in line and f"prompt {total} (" in line]
        time.sleep(0.05)
    assert lines, server.log_text()[-2000:]
    new = int(re.search(r"prompt \d+ \((\d+) new\)", lines[-1]).group(1))
    assert new < total / 2, lines[-1]


# ---- the key, CORS, metrics, tokenize, alias ---------------------------------------------------------------------

def raw_request(s, method, path, headers=None, body=None):
    req = urllib.request.Request(s.url + path, method=method, data=body,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_api_key_on_every_endpoint_but_health_and_the_page():
    s = Server("api-key", "--api-key", "s3cret-key")
    try:
        assert raw_request(s, "GET", "/health")[0] == 200
        assert raw_request(s, "GET", "/")[0] == 200
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
        for method, path, data in (("GET", "/v1/models", None), ("POST", "/v1/chat/completions", body),
                                   ("POST", "/v1/completions", body), ("POST", "/", body), ("GET", "/metrics", None),
                                   ("POST", "/tokenize", b'{"content": "x"}')):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"},
                            {"Authorization": "Bearer s3cret-key-and-more"}):
                status, hdrs, raw = raw_request(s, method, path, headers, data)
                assert status == 401, (path, headers)
                err = json.loads(raw)["error"]
                assert err["code"] == "invalid_api_key" and err["type"] == "authentication_error"
                assert hdrs["WWW-Authenticate"] == "Bearer"
            status = raw_request(s, method, path, {"Authorization": "Bearer s3cret-key"}, data)[0]
            assert status != 401, path
        assert [m.id for m in client_of(s, "s3cret-key").models.list()] == ["tiny-qwen2"]
        with pytest.raises(openai.AuthenticationError):
            client_of(s, "nope").models.list()
    finally:
        assert s.stop() == 0
    s = Server("api-key-env", env={"QWEN_API_KEY": "from-env"})  # the environment variable
    try:
        assert raw_request(s, "GET", "/v1/models")[0] == 401
        assert raw_request(s, "GET", "/v1/models", {"Authorization": "Bearer from-env"})[0] == 200
    finally:
        assert s.stop() == 0


def test_cors_preflight_and_headers(server):
    s = Server("api-cors", "--cors-origin", "http://app.example", "--api-key", "k")
    try:
        pre = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"}
        status, h, raw = raw_request(s, "OPTIONS", "/v1/chat/completions", pre)
        assert status == 204 and raw == b""  # no key needed for a preflight
        assert h["Access-Control-Allow-Origin"] == "http://app.example"
        assert "POST" in h["Access-Control-Allow-Methods"]
        assert h["Access-Control-Allow-Headers"] == "authorization, content-type, x-stainless-os"
        key = {"Authorization": "Bearer k"}
        status, h, _ = raw_request(s, "GET", "/v1/models", {"Origin": "http://app.example", **key})
        assert status == 200 and h["Access-Control-Allow-Origin"] == "http://app.example"
        status, h, _ = raw_request(s, "GET", "/v1/models", {"Origin": "http://app.example"})  # errors carry it too
        assert status == 401 and h["Access-Control-Allow-Origin"] == "http://app.example"
        status, h, _ = raw_request(s, "GET", "/v1/models", {"Origin": "http://evil.example", **key})
        assert status == 200 and "Access-Control-Allow-Origin" not in h
        assert raw_request(s, "OPTIONS", "/nowhere", pre)[0] == 404
    finally:
        assert s.stop() == 0
    # without --cors-origin: no CORS headers, and OPTIONS is not a method of any route
    status, h, _ = raw_request(server, "OPTIONS", "/v1/chat/completions", pre)
    assert status == 405 and "Access-Control-Allow-Origin" not in h
    status, h, _ = raw_request(server, "GET", "/v1/models", {"Origin": "http://app.example"})
    assert status == 200 and "Access-Control-Allow-Origin" not in h


def test_metrics_parse_as_prometheus_text(server):
    parser = pytest.importorskip("prometheus_client.parser")
    chat(server, max_tokens=5, temperature=0)
    stream_events(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                                                   "stream": True})
    post(server.url + "/v1/chat/completions", {"messages": "bad"})
    status, headers, raw = raw_request(server, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in parser.text_string_to_metric_families(raw.decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert families["qwen_requests"].type == "counter"
    assert samples[("qwen_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "200")))] >= 2
    assert samples[("qwen_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "400")))] >= 1
    assert samples[("qwen_generation_tokens_total", ())] >= 10 and samples[("qwen_prompt_tokens_total", ())] > 0
    assert families["qwen_requests_running"].type == "gauge" and families["qwen_requests_waiting"].type == "gauge"
    for h in ("qwen_time_to_first_token_seconds", "qwen_inter_token_latency_seconds", "qwen_request_duration_seconds"):
        assert families[h].type == "histogram"
        count = samples[(h + "_count", ())]
        assert count >= 2 and samples[(h + "_bucket", (("le", "+Inf"),))] == count


def test_tokenize_round_trip(server):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(ROOT / "test/data/tiny-qwen2/tokenizer.json"))
    for text in ("Hello world", "你好, 世界 😀", "<|im_start|>user\nhi<|im_end|>", ""):
        status, _, out = post(server.url + "/tokenize", {"content": text, "add_special": False})
        assert status == 200 and out["tokens"] == hf.encode(text, add_special_tokens=False).ids
        assert post(server.url + "/detokenize", {"tokens": out["tokens"]})[2] == {"content": text}
    out = post(server.url + "/tokenize", {"content": "é<|im_end|>", "with_pieces": True})[2]["tokens"]
    assert out[-1] == {"id": 511, "piece": "<|im_end|>"} and all(set(t) == {"id", "piece"} for t in out)
    assert post(server.url + "/tokenize", {"content": "<|im_end|>", "parse_special": False})[2]["tokens"] != [511]
    assert param_of(post(server.url + "/detokenize", {"tokens": [512]})) == "tokens"
    assert param_of(post(server.url + "/detokenize", {"tokens": ["a"]})) == "tokens"
    assert param_of(post(server.url + "/tokenize", {"content": 5})) == "content"


def test_alias_names_the_model():
    s = Server("api-alias", "--alias", "qwen-tiny")
    try:
        assert [m["id"] for m in get_json(s.url + "/v1/models")["data"]] == ["qwen-tiny"]
        assert chat(s, max_tokens=1)["model"] == "qwen-tiny"
    finally:
        assert s.stop() == 0


def test_command_line_of_the_new_flags():
    for args, message in ((["--reasoning-format", "maybe"], "--reasoning-format must be"),
                          (["--cors-origin", "a b"], "--cors-origin takes one origin"),
                          (["-ngl", "x"], "-ngl expects an integer"),
                          (["--repeat-last-n", "-5"], "--repeat-last-n must be in")):
        p = subprocess.run([SERVER, "-m", MODEL, *args], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and message in p.stderr, p.stderr
    s = Server("api-llama-flags", "-ngl", "99", "-fa", "--frequency-penalty", "0.5", "--repeat-last-n", "64")
    try:
        assert "-ngl 99 has no effect" in s.log_text() and "flash attention is always on" in s.log_text()
    finally:
        assert s.stop() == 0

