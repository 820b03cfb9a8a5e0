"""The chat page (GET /) in headless Chromium: type, watch the streamed answer, keep the conversation.

Needs Python playwright and Chromium at /usr/bin/chromium; skipped with the reason when either is missing.
Leaves a screenshot in build/test-artifacts/chat.png.
"""
import json
import os

import pytest

from test_server import ARTIFACTS, MODEL, SERVER, Server, stream_text

CHROMIUM = "/usr/bin/chromium"

sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"Chromium not found at {CHROMIUM}", allow_module_level=True)
if not (os.path.exists(SERVER) and os.path.exists(MODEL)):
    pytest.skip("needs ./qwen-server and build/tiny-qwen2.bin (run make first)", allow_module_level=True)


@pytest.fixture(scope="module")
def server():
    s = Server("web-server")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        pg = browser.new_page(viewport={"width": 1100, "height": 720})
        yield pg
        browser.close()


def set_slider(page, sel, value):
    page.eval_on_selector(sel, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(value))


def test_chat_page(server, page):
    requests = []
    page.on("request", lambda r: requests.append(json.loads(r.post_data))
            if r.url.endswith("/v1/chat/completions") else None)
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('model').textContent === 'tiny-qwen2'")

    # Settings the test can predict: a fixed seed is not on the page, so use greedy decoding.
    set_slider(page, "#temperature", 0)
    set_slider(page, "#max-tokens", 32)
    page.fill("#system", "You are a helpful assistant.")

    def ask(text, turn):
        page.fill("#input", text)
        page.press("#input", "Enter")
        page.wait_for_function(f"document.querySelectorAll('.msg.assistant').length === {turn}")
        page.wait_for_selector("body[data-state=idle]")
        return page.locator(".msg.assistant .body").nth(turn - 1).inner_text()

    first = ask("你好，请介绍一下你自己。", 1)
    second = ask("Show me some code:\n```\nprint('hi')\n```", 2)

    # Both turns are on the page, in order.
    users = page.locator(".msg.user .body").all_inner_texts()
    assert users[0] == "你好，请介绍一下你自己。" and "print('hi')" in users[1]
    assert page.locator(".msg.user .body pre").count() == 1  # the ``` block became a code block

    # The page streamed, and the second request carried the whole conversation.
    assert [r["stream"] for r in requests] == [True, True]
    assert requests[0]["temperature"] == 0 and requests[0]["max_tokens"] == 32
    msgs = requests[1]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1]["content"] == "你好，请介绍一下你自己。"

    # What the page shows is the answer the API streams for the same conversation.
    expected, _ = stream_text(server, "/v1/chat/completions", {k: v for k, v in requests[0].items()})
    assert first.strip() == expected.strip()
    assert msgs[2]["content"] == expected
    expected2, _ = stream_text(server, "/v1/chat/completions", dict(requests[1]))
    assert second.strip() == expected2.strip()

    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "chat.png"))

    # Clear chat empties the conversation.
    page.click("#clear")
    assert page.locator(".msg").count() == 0


# A stream that sends one piece and then waits forever, standing in for a long answer (the tiny model is
# too fast to click Stop in the middle of a real one). It ends only when the page aborts the request.
ENDLESS_FETCH = """() => {
window.fetch = (url, opts) => new Promise((resolve) => {
  const enc = new TextEncoder();
  const body = new ReadableStream({ start(ctrl) {
    ctrl.enqueue(enc.encode('data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\\n\\n'));
    ctrl.enqueue(enc.encode('data: {"choices":[{"index":0,"delta":{"content":"Once upon a time"}}]}\\n\\n'));
    opts.signal.addEventListener("abort", () => ctrl.error(new DOMException("aborted", "AbortError")));
  } });
  resolve(new Response(body, { headers: { "Content-Type": "text/event-stream" } }));
});
}"""


def test_stop_button(server, page):
    page.goto(server.url + "/")
    page.evaluate(ENDLESS_FETCH)
    page.fill("#input", "Write a long story.")
    page.press("#input", "Enter")
    page.wait_for_selector("body[data-state=generating]")
    page.wait_for_function("document.querySelector('.msg.assistant .body').textContent === 'Once upon a time'")
    assert page.inner_text("#send") == "Stop"
    page.click("#send")  # the Send button is the Stop button while an answer streams
    page.wait_for_selector("body[data-state=idle]")
    assert page.inner_text("#send") == "Send"
    assert page.inner_text(".msg.assistant .body") == "Once upon a time"
    assert "stopped" in page.inner_text(".msg.assistant .meta")


def test_reasoning_shows_collapsed_and_the_key_is_sent(page):
    """On a Qwen3 model the page shows the reasoning collapsed above the answer; with --api-key it sends the key
    typed in its field. (The random model never thinks by itself: the request gets a grammar that makes it.)"""
    from test_api import QWEN3_TEMPLATE, THINKING, chat_model
    s = Server("web-qwen3", "--api-key", "page-key", model=chat_model("tiny-qwen3-chat", QWEN3_TEMPLATE))
    try:
        def add_grammar(route, request):
            body = json.loads(request.post_data)
            route.continue_(post_data=json.dumps({**body, "grammar": THINKING}))
        page.route("**/v1/chat/completions", add_grammar)
        page.goto(s.url + "/")
        page.wait_for_function("document.getElementById('model').textContent === 'API key needed'")
        page.fill("#api-key", "page-key")
        page.dispatch_event("#api-key", "change")
        page.wait_for_function("document.getElementById('model').textContent === 'tiny-qwen3-chat'")
        page.fill("#input", "2+2?")
        page.press("#input", "Enter")
        page.wait_for_selector(".msg.assistant details.reasoning")
        page.wait_for_selector("body[data-state=idle]")
        details = page.locator(".msg.assistant details.reasoning")
        assert details.get_attribute("open") is None  # collapsed
        assert page.inner_text(".msg.assistant .body") == "It is 4."
        box_r, box_a = details.bounding_box(), page.locator(".msg.assistant .body").bounding_box()
        assert box_r["y"] < box_a["y"]  # above the answer
        page.click(".msg.assistant details.reasoning summary")
        assert page.inner_text(".msg.assistant details.reasoning .text") == "First, 2 + 2."
        page.screenshot(path=os.path.join(ARTIFACTS, "chat-reasoning.png"))
    finally:
        page.unroute("**/v1/chat/completions")
        assert s.stop() == 0
