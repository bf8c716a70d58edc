"""Every JSON edgekit reads enters here, and the one canonical form it hashes.

Reading (`parse_json`, `read_json`): a regular file of bounded size, strict UTF-8, nesting at most MAX_DEPTH deep
(checked before parsing, so a hostile file cannot exhaust the parser's stack), no duplicate key in any object (the
reader that keeps the first and the reader that keeps the last would see different documents), no lone surrogate
in any string (it has no UTF-8 form, so it could not be hashed or written back). Each violation is one line naming
the file.

Canonical form (`canonical_json`): RFC 8785 (JSON Canonicalization Scheme). Keys sorted by their UTF-16 code units,
no whitespace, strings with the minimal escapes, numbers as ECMAScript prints an IEEE double (shortest round trip:
16.0 and 16 are both `16`, 1e-06 is `0.000001`). The C++ host (hosts/cpp/src/json.cpp) implements the same rules,
so both compute the same digest from the same bytes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

MAX_DEPTH = 64
MAX_BYTES = 64 << 20  # a 151k-token tokenizer.json is ~11 MB
MAX_SAFE_INTEGER = 2**53  # beyond it a JSON number has no exact IEEE double, so no canonical form

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


class _Duplicate(ValueError):
    pass


def _unique_object(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return obj


def nesting_depth(data: bytes) -> int:
    """How deep arrays and objects nest (strings skipped), without recursion."""
    skeleton = np.frombuffer(_STRING.sub(b"", data), dtype=np.uint8)
    if not skeleton.size:
        return 0
    step = (np.isin(skeleton, (ord("["), ord("{")))).astype(np.int32) - np.isin(skeleton, (ord("]"), ord("}")))
    return int(np.cumsum(step).max(initial=0))


def _first_lone_surrogate(obj) -> str | None:
    """A JSON path to the first string (key or value) that holds a lone surrogate, or None."""
    stack = [(obj, "$")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return where
        elif isinstance(value, dict):
            for k, v in value.items():
                try:
                    k.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{where} (a key)"
                stack.append((v, f"{where}.{k}"))
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))
    return None


def parse_json(data: bytes | str, where: str, *, max_depth: int = MAX_DEPTH):
    """The parsed document, or EdgekitError naming `where` (a file, or file:line for JSONL)."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise EdgekitError(f"{where}: not valid UTF-8 text") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EdgekitError(f"{where}: not valid JSON (not UTF-8 at byte {e.start})") from None
    depth = nesting_depth(data)
    if depth > max_depth:
        raise EdgekitError(f"{where}: JSON nested {depth} levels deep; edgekit reads at most {max_depth}")
    try:
        obj = json.loads(text, object_pairs_hook=_unique_object)
    except _Duplicate as e:
        raise EdgekitError(
            f"{where}: duplicate key {str(e.args[0])!r} in one JSON object; a key may appear once "
            "(readers would disagree on which value counts)"
        ) from None
    except json.JSONDecodeError as e:
        raise EdgekitError(f"{where}: not valid JSON ({e})") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits
        raise EdgekitError(f"{where}: not valid JSON ({str(e)[:200]})") from None
    bad = _first_lone_surrogate(obj)
    if bad:
        raise EdgekitError(f"{where}: {bad} holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text")
    return obj


def read_json(path: str | Path, *, max_bytes: int = MAX_BYTES, follow_links: bool = True):
    """The parsed file, or EdgekitError naming it when it is missing, not a regular file, too large, not UTF-8,
    not JSON, too deep, or has a duplicate key."""
    from edgekit.safe_files import read_regular

    return parse_json(read_regular(path, max_bytes=max_bytes, follow_links=follow_links), str(path))


def read_json_object(path: str | Path, *, optional: bool = False) -> dict:
    """A JSON file that must hold an object ({} for a missing optional file)."""
    if optional and not Path(path).exists() and not Path(path).is_symlink():
        return {}
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise EdgekitError(f"{path}: must hold a JSON object, not {type(obj).__name__}")
    return obj


# ---- RFC 8785 canonical form ------------------------------------------------------------------------------


def es_number(x: float | int) -> str:
    """A number as ECMAScript's Number.prototype.toString prints the IEEE double (RFC 8785 section 3.2.2.3)."""
    if isinstance(x, int):
        if abs(x) > MAX_SAFE_INTEGER:
            raise ValueError(f"integer {x} is beyond 2^53: it has no exact canonical form")
        return str(x)
    if not math.isfinite(x):
        raise ValueError(f"{x} is not a JSON number")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")  # repr: the shortest digits that round-trip
    whole, _, frac = mantissa.partition(".")
    whole = whole.lstrip("0")
    n = len(whole) + int(exp or 0) if whole else int(exp or 0) - (len(frac) - len(frac.lstrip("0")))
    digits = (whole + frac).lstrip("0").rstrip("0")  # value = 0.digits x 10^n
    k = len(digits)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * -n + digits
    else:
        e = n - 1
        body = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + body


def _write(value, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, (int, float)):
        out.append(es_number(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))  # the same minimal escapes as RFC 8785
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _write(v, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, k in enumerate(sorted(value, key=lambda s: s.encode("utf-16-be"))):
            if not isinstance(k, str):
                raise ValueError(f"object key {k!r} is not a string")
            if i:
                out.append(",")
            out.append(json.dumps(k, ensure_ascii=False))
            out.append(":")
            _write(value[k], out)
        out.append("}")
    else:
        raise ValueError(f"{type(value).__name__} is not a JSON value")


def canonical_json(value) -> bytes:
    """RFC 8785 bytes of a JSON value (ValueError for NaN, infinities, integers beyond 2^53, lone surrogates)."""
    out: list[str] = []
    _write(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone surrogate") from None
