"""Where a command may write: never over one of its inputs, never over a user's file.

Every command that writes checks its outputs here before any work:
- an output that is one of the command's inputs, or lies inside one (a checkpoint folder, a bundle, a samples
  folder), is refused, compared by device and inode of the output and each of its existing parent folders, never by
  path text (a link, `..` or a bind mount cannot hide it), and `--force` does not change that;
- an output file that exists is refused unless it is the command's own earlier output (`ours` recognises it by its
  content: an edgekit GGUF, an edgekit ONNX graph, an edgekit CSV) or the user passes `--force`;
- an output folder must be absent, empty, or hold only what the command itself writes there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from edgekit.errors import EdgekitError

FORCE_HINT = "choose another --out, or pass --force to replace it"


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _existing_chain(out: Path) -> list[Path]:
    """`out` (when it exists) and every existing folder above it, nearest first."""
    chain, p = [], Path(os.path.abspath(out))
    while True:
        if p.exists():
            chain.append(p)
        if p.parent == p:
            return chain
        p = p.parent


def refuse_overlap(out: Path, inputs: Iterable[Path | None], *, flag: str = "--out") -> None:
    """Refuse an output that is, or is inside, one of the inputs (by device and inode)."""
    ids = {}
    for inp in inputs:
        if inp is not None and (ident := _identity(Path(inp))) is not None:
            ids.setdefault(ident, Path(inp))
    for p in _existing_chain(Path(out)):
        hit = ids.get(_identity(p))
        if hit is not None:
            where = "is" if p == Path(os.path.abspath(out)) else "is inside"
            raise EdgekitError(
                f"{flag} {out}: {where} the input {hit}; edgekit never writes over or into what it "
                "reads: choose an --out elsewhere"
            )


def claim_file(
    out: Path,
    inputs: Iterable[Path | None],
    *,
    force: bool,
    ours: Callable[[Path], bool] | None = None,
    flag: str = "--out",
) -> None:
    """A file output: not an input or inside one; absent, or edgekit's own earlier output, or --force."""
    out = Path(out)
    refuse_overlap(out, inputs, flag=flag)
    if out.is_dir():
        raise EdgekitError(f"{flag} {out}: is a directory; give a file path")
    if out.is_symlink():
        raise EdgekitError(f"{flag} {out}: is a symbolic link; give the file path itself")
    if out.exists() and not force and not (ours is not None and _safely(ours, out)):
        raise EdgekitError(f"{flag} {out}: exists and is not an earlier output of this command; {FORCE_HINT}")


def claim_dir(
    out: Path, inputs: Iterable[Path | None], *, ours: Callable[[str], bool], flag: str = "--out", what: str = "output"
) -> None:
    """A folder output: not an input or inside one; absent, empty, or holding only names `ours(name)` accepts."""
    out = Path(out)
    refuse_overlap(out, inputs, flag=flag)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise EdgekitError(f"{flag} {out}: exists and is not a directory; give a new or empty directory")
    if not out.exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if not ours(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise EdgekitError(
            f"{flag} {out}: holds {shown}, not an earlier {what}; give a new or empty directory "
            "(edgekit never overwrites files it did not write)"
        )


def _safely(check: Callable[[Path], bool], path: Path) -> bool:
    try:
        return bool(check(path))
    except Exception:  # an unreadable or foreign file is simply not ours
        return False


# ---- what each writer recognises as its own -------------------------------------------------------------------

GGUF_WRITER_KEY = "edgekit.writer"


def is_edgekit_gguf(path: Path) -> bool:
    """A GGUF that edgekit wrote (it carries the edgekit.writer key)."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            return False
    from gguf import GGUFReader

    return GGUF_WRITER_KEY in GGUFReader(str(path)).fields


def is_edgekit_onnx(path: Path) -> bool:
    """An ONNX graph that edgekit exported (producer 'edgekit')."""
    import onnx

    if path.stat().st_size > (2 << 30):
        return False
    return onnx.load(str(path), load_external_data=False).producer_name == "edgekit"


def starts_with(prefix: bytes) -> Callable[[Path], bool]:
    def check(path: Path) -> bool:
        with open(path, "rb") as f:
            return f.read(len(prefix)) == prefix

    return check


def spec_paths(spec: str | Iterable[str]) -> list[Path]:
    """The files and folders a samples spec names (built-in set names are not paths)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [Path(x) for x in items if x and Path(x).exists()]


def is_json_with_schema(prefix: str) -> Callable[[Path], bool]:
    """A small JSON file whose "schema" starts with prefix (edgekit's own reports)."""

    def check(path: Path) -> bool:
        from edgekit.json_files import read_json

        obj = read_json(path, max_bytes=64 << 20)
        return isinstance(obj, dict) and str(obj.get("schema", "")).startswith(prefix)

    return check
