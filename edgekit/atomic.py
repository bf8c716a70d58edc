"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Write to a temporary name in the same directory, flush and fsync, then os.replace. A full disk
raises EdgekitError naming the file and leaves no partial file behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from edgekit.errors import EdgekitError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def plain_mode(path: Path) -> None:
    """The permissions a plain open() would give (mkstemp and some writers make 0600)."""
    os.chmod(path, 0o666 & ~_UMASK)


def write_error(path: Path, e: OSError) -> EdgekitError:
    """One line for a failed write: what happened to which file, and what to do."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return EdgekitError(f"{path}: no space left on device while writing; free disk space and rerun")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return EdgekitError(f"{path}: cannot write here ({e.strerror}); choose a writable location")
    if e.errno == errno.EISDIR:
        return EdgekitError(f"{path}: is a directory; give a file path")
    return EdgekitError(f"{path}: cannot write ({e.strerror or e})")


def _wrapped_os_error(e: Exception) -> OSError | None:
    """The OS error a library reported in its own exception type (Rust's io::Error text ends in "(os error N)")."""
    import re

    m = re.search(r"\(os error (\d+)\)", str(e))
    return OSError(int(m.group(1)), os.strerror(int(m.group(1)))) if m else None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on failure it is removed.
    Every OS failure (full disk, read-only or missing permission, a directory in the way) is one EdgekitError."""
    path = Path(path)
    if path.is_dir():
        raise EdgekitError(f"{path}: is a directory; give a file path")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        plain_mode(tmp)  # mkstemp makes 0600
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None
    except Exception as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        os_error = _wrapped_os_error(e)
        if os_error is not None:  # a library's own error around an OS one (safetensors: "... (os error 28)")
            raise write_error(path, os_error) from None
        raise
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj) -> None:
    """Deterministic JSON: sorted keys, fixed indentation, trailing newline."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
