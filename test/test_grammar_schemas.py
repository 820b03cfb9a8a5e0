"""Grammar-constrained generation under JSON Schemas, validated by the jsonschema package.

build/grammar_sample (test/grammar_sample.cpp) draws 200 seeded answers per schema at temperature 1 from a tiny
random-weight model (the CPU engine, the 512-token test vocabulary): the model's preferences are noise, so the
grammar's token mask does all the work. Every answer must end by the grammar ("stop"), parse as JSON and
validate. Strings carry a maxLength (or an enum or pattern) because a random model closes a free string only by
chance, after hundreds of tokens; the schema, not the grammar, sets that limit.
"""
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "build" / "grammar_sample"
MODEL = ROOT / "build" / "tiny-qwen2.bin"
N = 200

SHORT = {"type": "string", "maxLength": 12}

SCHEMAS = {
    "flat_required": {
        "type": "object",
        "properties": {"name": SHORT, "age": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["name", "age", "ok"],
        "additionalProperties": False,
    },
    "optional_fields": {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "minimum": -20, "maximum": 20},
            "b": SHORT,
            "c": {"type": "null"},
            "d": {"type": "number"},
        },
        "required": ["b"],
        "additionalProperties": False,
    },
    "nested_objects": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "maximum": 9999},
                    "address": {
                        "type": "object",
                        "properties": {"city": SHORT, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                        "required": ["city", "zip"],
                    },
                },
                "required": ["id", "address"],
            },
            "active": {"type": "boolean"},
        },
        "required": ["user", "active"],
    },
    "arrays": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": SHORT, "maxItems": 4},
            "matrix": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
                "minItems": 2,
                "maxItems": 3,
            },
        },
        "required": ["tags", "matrix"],
    },
    "enums_and_const": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "size": {"enum": [1, 2.5, None, "XL", {"w": [1, 2]}]},
            "kind": {"const": "shirt"},
        },
        "required": ["color", "size", "kind"],
    },
    "any_of": {
        "type": "object",
        "properties": {
            "value": {"anyOf": [{"type": "integer", "minimum": 0}, SHORT, {"type": "null"}]},
            "pair": {"anyOf": [{"type": "array", "items": {"type": "boolean"}, "maxItems": 2}, {"type": "boolean"}]},
        },
        "required": ["value", "pair"],
    },
    "refs_recursive": {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "label": {"enum": ["x", "y", "z"]},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
                },
                "required": ["label"],
            }
        },
        "$ref": "#/$defs/node",
    },
    "strings_with_rules": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
            "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"},
            "note": {"type": "string", "minLength": 2, "maxLength": 6},
            "day": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "uuid"},
        },
        "required": ["code", "email", "note", "day", "id"],
    },
    "numbers_and_bounds": {
        "type": "object",
        "properties": {
            "byte": {"type": "integer", "minimum": 0, "maximum": 255},
            "neg": {"type": "integer", "exclusiveMinimum": -1000, "exclusiveMaximum": -10},
            "price": {"type": "number", "minimum": 0},
            "ratio": {"type": "number", "exclusiveMinimum": 0},
            "big": {"type": "integer", "minimum": 100000},
        },
        "required": ["byte", "neg", "price", "ratio", "big"],
    },
    "type_lists_and_nullables": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"v": {"type": ["integer", "string", "null"], "maxLength": 5}, "w": {"type": ["boolean", "null"]}},
            "required": ["v"],
            "additionalProperties": False,
        },
        "minItems": 1,
        "maxItems": 3,
    },
}


def run_sampler(schema_text, n, seed=0, max_tokens=800, timeout=600):
    path = ROOT / "build" / "test-schema.json"
    path.write_text(schema_text, encoding="utf-8")
    p = subprocess.run([str(SAMPLE), str(MODEL), str(path), str(n), str(seed), str(max_tokens)], capture_output=True,
                       timeout=timeout, cwd=ROOT)
    return p, [json.loads(line) for line in p.stdout.decode("utf-8").splitlines()]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_answer_parses_and_validates(name):
    schema = SCHEMAS[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    p, answers = run_sampler(json.dumps(schema), N, seed=1000)
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    assert len(answers) == N
    checker = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    distinct = set()
    for a in answers:
        assert a["finish_reason"] == "stop", a
        value = json.loads(a["text"])
        errors = list(checker.iter_errors(value))
        assert not errors, (a, errors[0].message)
        distinct.add(a["text"])
    # not one answer over and over (the tiny model is peaked: its favourites come back often)
    assert len(distinct) >= 5, distinct


def test_max_tokens_before_the_end_gives_length_and_the_text_so_far():
    schema = json.dumps(SCHEMAS["nested_objects"])
    p, answers = run_sampler(schema, 20, seed=7, max_tokens=5)
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    for a in answers:
        assert a["finish_reason"] == "length", a
        assert a["tokens"] == 5
        assert a["text"].startswith("{")
        with pytest.raises(json.JSONDecodeError):
            json.loads(a["text"])


@pytest.mark.parametrize("schema, message", [
    ('{"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}',
     "json schema: /properties/a/format: unsupported format 'email'"),
    ('{"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 3}}}',
     "json schema: /properties/a: unsupported keyword 'multipleOf'"),
    ('{"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}', "$ref '#/$defs/nope' does not resolve"),
    ('{"type": "object",\n "properties": {"a": 1,}}', "json schema: line 2 col 24: expected a string key"),
    ('{"$defs": {"l": {"type": "array", "items": {"$ref": "#/$defs/l"}, "minItems": 1}}, "$ref": "#/$defs/l"}',
     "can never end"),
    ('{"type": "string", "pattern": "(a|b"}', "/pattern: regex: at offset 4: '(' is not closed"),
])
def test_bad_schemas_are_refused_with_the_place(schema, message):
    p, answers = run_sampler(schema, 1)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1, err
    assert answers == []
    assert err.startswith("grammar_sample: error: ") and err.count("\n") == 1, err
    assert message in err, err
