"""The manifest's seal: one sha256 over the RFC 8785 canonical form of everything but `seal` and `signature`.

The decision is that one digest: any change to any value, at any depth (an added key, a removed one, another type)
changes the canonical bytes, and no rearrangement of the file does (key order, whitespace, number spelling are not
part of the document). Field digests to depth 2 are kept only to name what was edited, keyed by the JSON path as a
list (["parts", "decoder"]), never by a joined string: a key holding a dot cannot pose as a nested field.

The seal catches an edit or a corruption, not someone who rewrites the seal too: `signature` is a slot, outside the
seal, for a detached signature over `seal.sha256`. hosts/cpp/src/manifest.cpp checks the same seal the same way.
"""

from __future__ import annotations

import hashlib

from edgekit.json_files import canonical_json

ALGORITHM = "sha256/rfc8785"
UNSEALED_KEYS = ("seal", "signature")


def sealed_body(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in UNSEALED_KEYS}


def _sha(value) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def json_pointer(path: list[str]) -> str:
    """RFC 6901: /parts/decoder (a '/' in a key is ~1, a '~' is ~0), for messages."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def field_digests(body: dict) -> list[list]:
    """[[path, sha256], ...] of every field to depth 2, sorted by path."""
    out = []
    for key, value in body.items():
        if isinstance(value, dict) and value:
            out += [[[key, sub], _sha(inner)] for sub, inner in value.items()]
        else:
            out.append([[key], _sha(value)])
    return sorted(out)


def compute_seal(manifest: dict) -> dict:
    body = sealed_body(manifest)
    return {"algorithm": ALGORITHM, "sha256": _sha(body), "fields": field_digests(body)}


def seal_manifest(manifest: dict) -> dict:
    """The manifest with its seal (and an empty signature slot) added."""
    return {**sealed_body(manifest), "seal": compute_seal(manifest), "signature": manifest.get("signature")}


def check_seal(manifest: dict) -> list[str]:
    """Errors naming every field that differs from what was sealed (empty when intact). Raises ValueError when the
    manifest has no canonical form (a number beyond 2^53, NaN)."""
    seal = manifest.get("seal")
    if not isinstance(seal, dict) or not isinstance(seal.get("fields"), list):
        return ["manifest has no seal: it was edited, or written by an older edgekit; rebuild the bundle"]
    now = compute_seal(manifest)
    if canonical_json(seal) == canonical_json(now):
        return []
    if seal.get("algorithm") != ALGORITHM:
        return [f"manifest seal: algorithm {seal.get('algorithm')!r}, this edgekit checks {ALGORITHM}; rebuild"]
    if seal.get("sha256") == now["sha256"]:  # the manifest is what was sealed: only the seal's own entries changed
        return ["manifest seal: it does not match the manifest (the seal itself was edited)"]
    try:
        sealed = {tuple(path): digest for path, digest in seal["fields"]}
    except (TypeError, ValueError):
        sealed = {}
    current = {tuple(path): digest for path, digest in now["fields"]}
    errors = [
        f"manifest field {json_pointer(list(p))} was edited after the build (it differs from the seal)"
        for p in sorted(set(sealed) & set(current))
        if sealed[p] != current[p]
    ]
    errors += [
        f"manifest field {json_pointer(list(p))} was added after the build" for p in sorted(set(current) - set(sealed))
    ]
    errors += [
        f"manifest field {json_pointer(list(p))} was removed after the build"
        for p in sorted(set(sealed) - set(current))
    ]
    return errors or ["manifest seal: it does not match the manifest (the seal itself was edited)"]
