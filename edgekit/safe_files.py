"""Opening files edgekit reads: regular files only, never blocking, never through a link where links are refused.

Every input enters through `open_regular` (a FIFO, a socket, a device or a directory is one line, before any read
that could block or never end) and is bounded in size before it is read whole. Inside a bundle, `open_beneath`
walks a relative path one component at a time with O_NOFOLLOW, so no component may be a link and nothing outside
the bundle's directory is reachable. `sha256_fd` hashes the open file itself: what was hashed is what is read
through the same descriptor (`fd_path` names it for libraries that only take a path).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from edgekit.errors import EdgekitError

CHUNK = 1 << 22


def _describe(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular(path: str | Path, *, follow_links: bool = True, dir_fd: int | None = None, what: str = "") -> int:
    """A read-only descriptor of a regular file (the caller closes it). O_NONBLOCK keeps a FIFO from blocking the
    open; the type is checked on the open descriptor itself, so nothing swapped in after a stat() is read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    label = what or str(path)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise EdgekitError(f"{label}: file not found") from None
    except OSError as e:
        if e.errno in (getattr(os, "ELOOP", 40), 40) and not follow_links:
            raise EdgekitError(f"{label}: is a symbolic link; links are refused here") from None
        if e.errno == 21:  # EISDIR
            raise EdgekitError(f"{label}: is a directory, not a file") from None
        raise EdgekitError(f"{label}: cannot be opened ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise EdgekitError(f"{label}: is {_describe(mode)}, not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_fd(fd: int, *, max_bytes: int, label: str) -> bytes:
    """The whole file behind fd, from its start, refused (one line) when it is larger than max_bytes."""
    size = os.fstat(fd).st_size
    if size > max_bytes:
        raise EdgekitError(f"{label}: {size:,} bytes, larger than the {max_bytes:,} edgekit reads for this file")
    chunks, total = [], 0
    while True:
        block = os.pread(fd, min(CHUNK, max_bytes + 1 - total), total)
        if not block:
            break
        chunks.append(block)
        total += len(block)
        if total > max_bytes:  # grew while being read
            raise EdgekitError(f"{label}: larger than the {max_bytes:,} bytes edgekit reads for this file")
    return b"".join(chunks)


def read_regular(path: str | Path, *, max_bytes: int, follow_links: bool = True) -> bytes:
    fd = open_regular(path, follow_links=follow_links)
    try:
        return read_fd(fd, max_bytes=max_bytes, label=str(path))
    finally:
        os.close(fd)


def read_text(path: str | Path, *, max_bytes: int, follow_links: bool = True) -> str:
    """A regular file's UTF-8 text; EdgekitError naming the file and the first bad byte otherwise."""
    data = read_regular(path, max_bytes=max_bytes, follow_links=follow_links)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EdgekitError(f"{path}: not UTF-8 text (bad byte at {e.start})") from None


def sha256_fd(fd: int) -> str:
    """sha256 of the file behind fd, read from its start with pread (the descriptor's offset is left alone)."""
    h = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, CHUNK, offset):
        h.update(block)
        offset += len(block)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    fd = open_regular(path)
    try:
        return sha256_fd(fd)
    finally:
        os.close(fd)


def open_dir_nofollow(path: str | Path) -> int:
    """A descriptor of a directory that is not itself a link (the bundle's root)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EdgekitError(f"{path}: directory not found") from None
    except OSError as e:
        raise EdgekitError(
            f"{path}: not a directory edgekit can open without following a link ({e.strerror})"
        ) from None


def open_beneath(root_fd: int, rel: str, *, label: str) -> int:
    """Open `rel` (a normalised relative path) inside the directory root_fd, following no link at any component:
    a swapped-in link, or a directory replaced by a link, cannot lead outside the bundle."""
    parts = rel.split("/")
    current = root_fd
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            except OSError as e:
                raise EdgekitError(
                    f"{label}: folder '{part}' cannot be entered without following a link ({e.strerror})"
                ) from None
            if current != root_fd:
                os.close(current)
            current = nxt
        return open_regular(parts[-1], follow_links=False, dir_fd=current, what=label)
    finally:
        if current != root_fd:
            os.close(current)


def fd_path(fd: int) -> str:
    """A path that opens the very file behind fd (Linux: /proc/self/fd/N reopens the same inode, whatever was
    renamed over its old name since); for libraries that take a path, not a descriptor."""
    for base in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(base):
            return f"{base}/{fd}"
    raise EdgekitError("this system has no /proc/self/fd or /dev/fd: edgekit cannot load a file by its descriptor")


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
