"""Random comparison of the C++ tokenizer with Hugging Face `tokenizers` on the real Qwen tokenizer.

Thousands of random strings over a mixed pool (many scripts, combining marks, emoji sequences, every kind
of white space, non-ASCII digits, contractions, special-token fragments, random code points) are encoded
by both; any difference fails the test with a shrunk reproducer. The seed is fixed so that CI is
repeatable; set QWEN_TOKENIZER_SEED (and QWEN_TOKENIZER_N, strings per run) to explore further.

Needs `make build/tokenize_lines fixtures` (make test does it first).
"""
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tokenizers = pytest.importorskip('tokenizers')

ROOT = Path(__file__).resolve().parent.parent
TOKENIZE_LINES = ROOT / 'build' / 'tokenize_lines'
SEED = int(os.environ.get('QWEN_TOKENIZER_SEED', '20240611'))
N_STRINGS = int(os.environ.get('QWEN_TOKENIZER_N', '3000'))

SNIPPETS = [
    # Latin, with accents precomposed and decomposed, ligatures, sharp s
    'hello', 'World', 'HTTPServer', 'naïve', 'cafe\u0301', 'Ångström', 'straße', 'ﬁne', 'Œuvre', 'ĳ',
    # Greek, Cyrillic, Arabic, Hebrew, Devanagari, Thai
    'αβγ', 'Ωμέγα', 'ἀλήθεια', 'привет', 'Мир', 'ёлка', 'مرحبا', 'السلام', 'שלום', 'עִבְרִית', 'नमस्ते',
    'क्षत्रिय', 'สวัสดี', 'ภาษาไทย',
    # CJK, Japanese kana, Hangul (precomposed and as conjoining jamo)
    '你好', '世界', '中文分词', '日本語', 'ひらがな', 'カタカナ', '안녕하세요', '\u1100\u1161\u11a8',
    '\u1112\u1161\u11ab\u1100\u1173\u11af', '\u1100\u1161', '\u11a8',
    # combining marks in and out of canonical order
    'e\u0301', 'a\u0308\u0301', 'o\u0323\u0302', 'q\u0302\u0323', 'a\u0301\u0316', '\u0301', '\u0345\u0334',
    # emoji: plain, skin tones, ZWJ families, flags, keycaps, variation selectors
    '😀', '🎉', '👍🏽', '👨\u200d👩\u200d👧\u200d👦', '🧑\u200d💻', '🇺🇸', '🇯🇵🇩🇪', '1\ufe0f\u20e3', '❤️', '☺\ufe0e',
    # white space of every kind
    ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', '\r', '\x0b', '\x0c', '\u00a0', '\u2028', '\u2029', '\u3000',
    '\u1680', '\u2003', '\u0085', '\u200b', '\x1c', ' \n ', '\t\n', '\n \n',
    # digits: ASCII, Arabic-Indic, Devanagari, fullwidth, letter-like numbers, fractions, superscripts
    '0', '7', '123', '2024', '3.14', '٣٤', '४२', '１２', 'Ⅻ', '½', '²', '①',
    # contractions in mixed case (and the long s, which case-folds to s)
    "'s", "'S", "'t", "'T", "'re", "'RE", "'rE", "'ve", "'VE", "'m", "'M", "'ll", "'Ll", "'LL", "'d", "'D",
    "'ſ", "'x", "'", "don't", "I'M", "we'Re",
    # punctuation and symbols
    '.', ',', '!?', '...', '--', '()', '{}', '"', '`', '@#$%', '《》', '，。', '、', '«»', '→', '©', '€', '\\', '/*',
    # code
    'def f(x):\n    return x', 'int main() {', '    ', 'i += 1;', '<div class="a">', '#include <cstdio>',
    # special tokens and fragments of them
    '<|im_start|>', '<|im_end|>', '<|endoftext|>', '<think>', '</think>', '<tool_call>', '<|fim_prefix|>',
    '<|im_', '<|', '|>', 'im_end', '<|im_end', '<', '>', '<<|im_end|>>', '<|vision_pad|>',
]

# Ranges for random single code points: common blocks, plus anywhere in Unicode (unassigned included).
RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0x97F),
          (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x206F), (0x2190, 0x2BFF),
          (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF),
          (0x10000, 0x10FFFF), (0x0, 0x1F)]


def random_char(rng):
    lo, hi = rng.choice(RANGES)
    while True:
        c = rng.randint(lo, hi)
        if not 0xD800 <= c < 0xE000:
            return chr(c)


def random_string(rng):
    parts = []
    for _ in range(rng.randint(1, 12)):
        parts.append(rng.choice(SNIPPETS) if rng.random() < 0.7 else random_char(rng))
    return ''.join(parts)


def cpp_encode(model, texts, parse_special):
    """ids from build/tokenize_lines for each text, in one process."""
    cmd = [str(TOKENIZE_LINES), str(model)] + ([] if parse_special else ['--no-special'])
    stdin = ''.join(t.encode('utf-8').hex() + '\n' for t in texts)
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True).stdout
    lines = out.split('\n')[:len(texts)]
    assert len(lines) == len(texts), 'tokenize_lines printed %d lines for %d inputs' % (len(lines), len(texts))
    return [line if line.startswith('ERROR') else [int(x) for x in line.split()] for line in lines]


def hf_encode(tok, texts, parse_special):
    tok.encode_special_tokens = not parse_special
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def shrink(text, still_fails):
    """A shorter string that still fails: drop chunks of code points while the failure stays."""
    chunk = max(1, len(text) // 2)
    while chunk >= 1:
        candidates = [text[:i] + text[i + chunk:] for i in range(0, len(text), chunk)]
        failing = [c for c, bad in zip(candidates, still_fails(candidates)) if bad and c]
        if failing:
            text = failing[0]
            chunk = max(1, min(chunk, len(text) // 2))
        else:
            chunk //= 2
    return text


def compare(model, tokenizer_json, texts, parse_special):
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_json))

    def failing(batch):
        return [a != b for a, b in zip(cpp_encode(model, batch, parse_special), hf_encode(tok, batch, parse_special))]

    bad = [t for t, f in zip(texts, failing(texts)) if f]
    if bad:
        small = shrink(bad[0], failing)
        ours = cpp_encode(model, [small], parse_special)[0]
        theirs = hf_encode(tok, [small], parse_special)[0]
        pytest.fail('seed %d: %d of %d strings differ (parse_special=%s). Shortest reproducer: %r\n'
                    '  ours: %s\n  HF:   %s' % (SEED, len(bad), len(texts), parse_special, small, ours, theirs))


def fixture(name):
    path = ROOT / 'build' / name
    if not TOKENIZE_LINES.exists() or not path.exists():
        pytest.skip('needs build/tokenize_lines and build/%s (run make test)' % name)
    return path


@pytest.mark.parametrize('parse_special', [True, False])
def test_random_strings_qwen(parse_special):
    print('QWEN_TOKENIZER_SEED=%d' % SEED)
    rng = random.Random(SEED + parse_special)
    texts = [random_string(rng) for _ in range(N_STRINGS)]
    compare(fixture('qwen-tokenizer.bin'), ROOT / 'test/data/qwen-tokenizer/tokenizer.json', texts, parse_special)


def test_random_code_points_qwen():
    # Strings of code points drawn from anywhere: exercises the character-class and NFC tables.
    rng = random.Random(SEED + 7)
    texts = [''.join(random_char(rng) for _ in range(rng.randint(1, 16))) for _ in range(N_STRINGS)]
    compare(fixture('qwen-tokenizer.bin'), ROOT / 'test/data/qwen-tokenizer/tokenizer.json', texts, True)


def test_random_strings_small():
    rng = random.Random(SEED + 11)
    texts = [random_string(rng) for _ in range(N_STRINGS // 3)]
    compare(fixture('tokenizer-small.bin'), ROOT / 'test/data/tokenizer-small/tokenizer.json', texts, True)


def test_invalid_utf8_is_refused():
    model = fixture('tokenizer-small.bin')
    cmd = [str(TOKENIZE_LINES), str(model)]
    out = subprocess.run(cmd, input='61ff62\nc0af\n', capture_output=True, text=True, check=True).stdout
    assert out.split('\n')[:2] == ['ERROR invalid UTF-8 at byte 1', 'ERROR invalid UTF-8 at byte 0']


# ---- chat templates: chat_text / chat_tokens against the Jinja templates themselves -----------------

SPECIAL = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|vision_pad|>']
CHAT_PIECES = ['Hello', 'Hi!', ' ', '\n', '\n\n', '2+2?', '你好', '<think>', '</think>', '<think>\nreason\n</think>\n\n',
               '<tool_response>', '</tool_response>', 'answer', 'ok', '<tool_call>', "it's", '😀'] + SPECIAL


def random_conversation(rng, roles):
    msgs = []
    if rng.random() < 0.4:
        msgs.append({'role': 'system', 'content': 'Be brief.'})
    for _ in range(rng.randint(1, 6)):
        content = ''.join(rng.choice(CHAT_PIECES) for _ in range(rng.randint(0, 5)))
        msgs.append({'role': rng.choice(roles), 'content': content})
    return msgs


def jinja_template(source):
    """The template compiled in the environment transformers renders chat templates with (its tojson included)."""
    pytest.importorskip('jinja2')
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters['tojson'] = hf_tojson
    return env.from_string(source)


def hf_tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """transformers' tojson filter for chat templates (Python's json.dumps), which replaces Jinja's own."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@pytest.mark.parametrize('name, roles', [('qwen-tokenizer', ['user', 'assistant', 'tool', 'system']),
                                         ('tokenizer-small', ['user', 'assistant', 'system'])])
def test_chat_template_matches_jinja(name, roles):
    model = fixture(name + '.bin')
    folder = ROOT / 'test' / 'data' / name
    template = jinja_template(json.loads((folder / 'tokenizer_config.json').read_text())['chat_template'])
    tok = tokenizers.Tokenizer.from_file(str(folder / 'tokenizer.json'))
    rng = random.Random(SEED + 13)
    cases, lines = [], []
    for _ in range(500):
        msgs = random_conversation(rng, roles)
        gen, think = rng.random() < 0.8, rng.random() < 0.5
        cases.append((msgs, gen, think))
        fields = ['%d%d1' % (gen, think)] + ['%s:%s' % (m['role'].encode().hex(), m['content'].encode().hex())
                                              for m in msgs]
        lines.append(' '.join(fields) + '\n')
    cmd = [str(TOKENIZE_LINES), str(model), '--chat']
    out = subprocess.run(cmd, input=''.join(lines), capture_output=True, text=True, check=True).stdout.split('\n')
    assert len(out) == len(cases) + 1 and out[-1] == '', 'one output line per conversation'
    for (msgs, gen, think), line in zip(cases, out):
        text_hex, ids = line.split(' | ')
        kwargs = {'enable_thinking': think} if name == 'qwen-tokenizer' else {}
        expected = template.render(messages=msgs, add_generation_prompt=gen, **kwargs)
        assert bytes.fromhex(text_hex).decode() == expected, 'messages: %r' % msgs
        if not any(s in m['content'] for m in msgs for s in SPECIAL):  # else we refuse to parse them, by design
            tok.encode_special_tokens = False
            assert [int(x) for x in ids.split()] == tok.encode(expected, add_special_tokens=False).ids, msgs


# ---- tools and tool calls: Qwen2.5's and Qwen3's templates, as transformers renders them -------------------------

TOOL_WORDS = ['get_weather', 'search', 'add', 'convert_units', 'lookup_user', 'now']
VALUES = [0, 1, -7, 2.5, 1e-07, 100.0, 1e16, 3.14159, True, False, None, 'Paris', '雨の日', 'a "quoted" \\ line\n',
          'tab\there', '😀', '', [1, 2], {'nested': {'deep': [True, None]}}]


def random_tool(rng, name):
    props = {}
    for _ in range(rng.randint(0, 3)):
        key = rng.choice(['city', 'unit', 'query', 'n', 'ünïcode', 'days'])
        described = {'type': 'string', 'description': rng.choice(['The city', '城市', 'quote " and \\'])}
        props[key] = rng.choice([described,
                                 {'type': 'integer', 'minimum': rng.choice([0, 1.5, -3])},
                                 {'type': 'string', 'enum': ['c', 'f']}, {'type': 'number'}])
    fn = {'name': name, 'description': rng.choice(['Get the weather.', 'Look it up', '', '计算'])}
    if rng.random() < 0.8:
        fn['parameters'] = {'type': 'object', 'properties': props, 'required': list(props)[:1]}
    return {'type': 'function', 'function': fn}


def random_args(rng):
    return {rng.choice(['city', 'q', 'n', 'ключ']): rng.choice(VALUES) for _ in range(rng.randint(0, 3))}


def random_tool_conversation(rng, qwen3):
    msgs = []
    if rng.random() < 0.5:
        msgs.append({'role': 'system', 'content': rng.choice(['Be brief.', '', 'You are a tool user.'])})
    for _ in range(rng.randint(1, 5)):
        text = ''.join(rng.choice(CHAT_PIECES[:17]) for _ in range(rng.randint(0, 4)))  # no special tokens
        msgs.append({'role': 'user', 'content': text})
        if rng.random() < 0.7:
            calls = [{'id': 'call_%d' % k, 'type': 'function',
                      'function': {'name': rng.choice(TOOL_WORDS), 'arguments': random_args(rng)}}
                     for k in range(rng.randint(1, 3))]
            m = {'role': 'assistant', 'content': rng.choice(['', 'Let me check.', '\nok\n']), 'tool_calls': calls}
            if qwen3 and rng.random() < 0.3:
                m['reasoning_content'] = rng.choice(['think', '\nstep 1\n', ''])
            msgs.append(m)
            for k in range(len(calls)):
                result = rng.choice(['{"temp": 21}', 'sunny', ''])
                msgs.append({'role': 'tool', 'tool_call_id': 'call_%d' % k, 'content': result})
        if rng.random() < 0.6:
            answer = rng.choice(['Done.', '<think>\nhm\n</think>\n\nIt is 21.', ''])
            msgs.append({'role': 'assistant', 'content': answer})
    return msgs


def tools_fixture(name, tmp_root):
    """A tokenizer-only file of the real Qwen tokenizer with the named template (Qwen3's own, or Qwen2.5's)."""
    if name == 'qwen3':
        return fixture('qwen-tokenizer.bin'), json.loads((ROOT / 'test/data/qwen-tokenizer/tokenizer_config.json')
                                                        .read_text())['chat_template']
    fixture('qwen-tokenizer.bin')  # the same checks: the tools are built
    template = (ROOT / 'test/data/chat-templates/Qwen2.5-7B-Instruct.jinja').read_text()
    folder = tmp_root / 'qwen25-tokenizer'
    shutil.copytree(ROOT / 'test/data/qwen-tokenizer', folder)
    cfg = json.loads((folder / 'tokenizer_config.json').read_text())
    cfg['chat_template'] = template
    (folder / 'tokenizer_config.json').write_text(json.dumps(cfg))
    out = tmp_root / 'qwen25-tokenizer.bin'
    subprocess.run([sys.executable, str(ROOT / 'tools/export.py'), '--tokenizer-only', str(folder), str(out)],
                   check=True, capture_output=True)
    return out, template


@pytest.mark.parametrize('name', ['qwen3', 'qwen2.5'])
def test_chat_template_with_tools_matches_jinja(name, tmp_path):
    """Tools in the system turn, assistant tool calls (arguments sent as JSON text or as an object, rendered as the
    object, as vLLM does), tool results and Qwen3's reasoning: chat_text equal to the Jinja rendering, chat_tokens
    equal to HF's tokens of it."""
    model, source = tools_fixture(name, tmp_path)
    template = jinja_template(source)
    tok = tokenizers.Tokenizer.from_file(str(ROOT / 'test/data/qwen-tokenizer/tokenizer.json'))
    rng = random.Random(SEED + 17)
    cases, lines = [], []
    for _ in range(300):
        msgs = random_tool_conversation(rng, name == 'qwen3')
        tools = [random_tool(rng, n) for n in rng.sample(TOOL_WORDS, rng.randint(0, 3))]
        gen, think = rng.random() < 0.8, rng.random() < 0.5
        sent = json.loads(json.dumps(msgs))  # what a client sends: arguments often as JSON text
        for m in sent:
            for c in m.get('tool_calls', []):
                if rng.random() < 0.5:
                    c['function']['arguments'] = json.dumps(c['function']['arguments'], ensure_ascii=rng.random() < 0.5,
                                                            separators=rng.choice([(',', ':'), (', ', ': ')]))
        cases.append((msgs, tools, gen, think))
        lines.append(json.dumps({'messages': sent, 'tools': tools, 'add_generation_prompt': gen,
                                 'enable_thinking': think}) + '\n')
    out = subprocess.run([str(TOKENIZE_LINES), str(model), '--chat-json'], input=''.join(lines), capture_output=True,
                         text=True, check=True).stdout.split('\n')
    n_calls = 0
    for (msgs, tools, gen, think), line in zip(cases, out):
        assert not line.startswith('ERROR'), (line, msgs)
        text_hex, ids = line.split(' | ')
        kwargs = {'enable_thinking': think} if name == 'qwen3' else {}
        expected = template.render(messages=msgs, tools=tools or None, add_generation_prompt=gen, **kwargs)
        assert bytes.fromhex(text_hex).decode() == expected, 'messages: %r\ntools: %r' % (msgs, tools)
        tok.encode_special_tokens = False
        assert [int(x) for x in ids.split()] == tok.encode(expected, add_special_tokens=False).ids, msgs
        n_calls += sum(len(m.get('tool_calls', [])) for m in msgs)
    assert n_calls > 300  # the cases do exercise tool calls


def test_tools_are_refused_by_a_template_without_them():
    model = fixture('tokenizer-small.bin')
    line = json.dumps({'messages': [{'role': 'user', 'content': 'hi'}],
                       'tools': [{'type': 'function', 'function': {'name': 'f'}}]})
    out = subprocess.run([str(TOKENIZE_LINES), str(model), '--chat-json'], input=line + '\n', capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith('ERROR the chat template of tokenizer-small has no tool calling'), out
