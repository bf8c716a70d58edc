"""The JSON door and the canonical form (edgekit/json_files.py), and the C++ host's reader held to it: RFC 8785's
own number examples, strictness (duplicate keys, depth, lone surrogates), and random documents on which Python and
the host must compute byte-identical canonical forms, or both refuse."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from edgekit.errors import EdgekitError
from edgekit.json_files import canonical_json, es_number, parse_json


@pytest.mark.parametrize(
    "value,text",
    [  # RFC 8785 appendix B, and ECMAScript's switch points
        (0.0, "0"),
        (-0.0, "0"),
        (5e-324, "5e-324"),
        (-5e-324, "-5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (9007199254740992.0, "9007199254740992"),
        (9007199254740994.0, "9007199254740994"),
        (295147905179352830000.0, "295147905179352830000"),
        (1e21, "1e+21"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (333333333.33333329, "333333333.3333333"),
        (0.1, "0.1"),
        (1e23, "1e+23"),
        (4.5, "4.5"),
        (2e-3, "0.002"),
        (1e-27, "1e-27"),
        (-1.5e300, "-1.5e+300"),
        (123456789012345680000.0, "123456789012345680000"),
        (16, "16"),
    ],
)
def test_numbers_print_as_ecmascript_does(value, text):
    assert es_number(value) == text


def test_keys_sort_by_utf16_code_units_and_strings_escape_minimally():
    doc = {"\U0001f600": 1, "\ufb01": 2, "a": 'x\n\t\u0001"\\\u2028/', "": None, "b": [True, False]}
    assert canonical_json(doc).decode() == (
        '{"":null,"a":"x\\n\\t\\u0001\\"\\\\\u2028/","b":[true,false],"\U0001f600":1,"\ufb01":2}'
    )


@pytest.mark.parametrize(
    "text,needle",
    [
        ('{"a": 1, "a": 2}', "duplicate key"),
        ('{"x": {"b": 1, "c": {"b": 2, "b": 3}}}', "duplicate key"),
        ("[" * 65 + "]" * 65, "nested 65 levels"),
        ('"\\udc00"', "lone UTF-16 surrogate"),
        ('{"\\ud800": 1}', "lone UTF-16 surrogate"),
        ("1" * 5000, "not valid JSON"),
        ('{"a": 1', "not valid JSON"),
    ],
)
def test_strict_reader_refuses_with_one_line(text, needle):
    with pytest.raises(EdgekitError, match=needle):
        parse_json(text.encode(), "f.json")


def test_no_canonical_form_for_nan_or_huge_integers():
    for bad in (float("nan"), float("inf"), 2**53 + 1, {"a": "\ud800"}):
        with pytest.raises(ValueError):
            canonical_json(bad)


def _random_number(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randint(-(2**53), 2**53))
    if kind == 1:
        return repr(rng.uniform(-1e3, 1e3))
    if kind == 2:
        return f"{rng.uniform(1, 10):.{rng.randint(1, 20)}f}e{rng.choice('+-')}{rng.randint(0, 330)}"
    if kind == 3:
        return rng.choice(
            [
                "0",
                "-0",
                "0.0",
                "1E400",
                "-1e400",
                "1e-400",
                "0e5",
                "1.5E+2",
                "100e-2",
                "9007199254740993",
                "12345678901234567890123",
                "5e-324",
                "2.4703282292062328e-324",
            ]
        )
    if kind == 4:
        return repr(rng.random() * 10 ** rng.randint(-30, 30))
    return f"{rng.randint(0, 999)}.{rng.randint(0, 999):03d}"


def _random_string(rng: random.Random) -> str:
    pool = [
        "a",
        "Z",
        " ",
        "\\n",
        "\\t",
        "\\u0000",
        "\\u001f",
        '\\"',
        "\\\\",
        "/",
        "\\/",
        "é",
        "漢",
        "🚗",
        "\\u00e9",
        "\\ud83d\\ude97",
        "\\ud800",
        "\\udc00x",
        "\u2028",
        "\x7f",
        "\\uFFFF",
        "ﬁ",
    ]
    return '"' + "".join(rng.choice(pool) for _ in range(rng.randint(0, 6))) + '"'


def _random_doc(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if depth > 4 or r < 0.35:
        return rng.choice([_random_number(rng), _random_string(rng), "true", "false", "null"])
    if r < 0.6:
        return "[" + ",".join(_random_doc(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    keys = [_random_string(rng) for _ in range(rng.randint(0, 5))]
    if keys and rng.random() < 0.1:
        keys.append(rng.choice(keys))  # a duplicate
    return "{" + ",".join(f"{k}{rng.choice([':', ' : '])}{_random_doc(rng, depth + 1)}" for k in keys) + "}"


def _python_canonical(raw: bytes) -> bytes | None:
    try:
        return canonical_json(parse_json(raw, "doc"))
    except (EdgekitError, ValueError):
        return None


def test_host_and_python_compute_the_same_canonical_form(host, tmp_path, test_seed):
    """Random documents (numbers at every magnitude and spelling, escapes, surrogates, duplicate keys): the host's
    reader gives byte-identical canonical JSON, or refuses exactly when Python does."""
    rng = random.Random(test_seed)
    docs = [_random_doc(rng).encode() for _ in range(400)]
    docs += [
        b'{"a":1} ',
        b"\xef\xbb\xbf{}",
        b'{"a":"\xff"}',
        b'{"a":"\xc0\xaf"}',
        b'{"a":"\xed\xa0\x80"}',
        b'["\x01"]',
        b"[" * 64 + b"]" * 64,
        b"[" * 65 + b"]" * 65,
        b"01",
        b"1.",
        b".5",
        b"-",
        b"+1",
        b"NaN",
        b"[1,]",
        b'{"a":1,}',
    ]
    mismatches = []
    for i, raw in enumerate(docs):
        f = tmp_path / f"d{i}.json"
        f.write_bytes(raw)
        proc = subprocess.run([str(Path(host) / "json_canonical"), str(f)], capture_output=True, timeout=30)
        cpp = proc.stdout if proc.returncode == 0 else None
        assert proc.returncode in (0, 3), proc.stderr
        py = _python_canonical(raw)
        if cpp != py:
            mismatches.append((raw[:120], py, cpp))
    assert not mismatches, mismatches[:5]
    assert sum(_python_canonical(d) is not None for d in docs) > 150, "too few valid documents to mean much"


def test_a_manifest_round_trips_to_the_same_seal(bundle):
    from edgekit.bundle.seal import check_seal

    m = json.loads((Path(bundle) / "edgekit.json").read_text())
    assert check_seal(m) == []
    assert check_seal(json.loads(json.dumps(m, indent=7, ensure_ascii=True))) == []
