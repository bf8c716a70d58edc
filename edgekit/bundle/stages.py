"""Resumable build stages keyed by content hash, in a work directory the build owns and locks.

A build works in `OUT.partial/`: the bundle being assembled in `OUT.partial/bundle/` and one
marker per finished stage in `OUT.partial/stages/`. The work directory carries an ownership file
(`OUT.partial/OWNER`) and is locked (flock) while a build runs: a second build into the same OUT fails
at once, and a directory edgekit did not make is never reused or deleted. `--out` itself must be absent,
empty or an edgekit bundle (claim_out): anything else is refused before any work, so a build never
deletes what it did not create. A marker records the stage's key (a hash of
everything the stage's output depends on) and the sha256 of each file it produced. On a rerun a
stage is skipped only when its key matches and its outputs are still byte-for-byte what it wrote;
anything else (killed mid-stage, a changed input, a corrupted file) reruns it. Stages write their
outputs atomically, so a kill leaves either the old state or the new one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from edgekit.atomic import write_error, write_json
from edgekit.errors import EdgekitError
from edgekit.safe_files import sha256_file

OWNER = "OWNER"
OWNER_TEXT = "edgekit build work directory: safe to delete when no build is running\n"
BUNDLE_MANIFEST = "edgekit.json"


def _few(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def entries_not_from_a_bundle(directory: Path) -> list[str]:
    """What in `directory` is not an edgekit bundle's: everything, unless it holds an edgekit.json naming an edgekit
    bundle schema; then whatever its manifest does not list (a user's file added beside the artifacts)."""
    names = sorted(p.name for p in directory.iterdir())
    from edgekit.json_files import read_json

    try:
        data = read_json(directory / BUNDLE_MANIFEST, follow_links=False)
    except EdgekitError:
        return names
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("edgekit.bundle/"):
        return names
    listed = data.get("artifacts") if isinstance(data.get("artifacts"), dict) else {}
    tops = {Path(rel).parts[0] for rel in listed if isinstance(rel, str) and Path(rel).parts} | {BUNDLE_MANIFEST}
    return [n for n in names if n not in tops]


def claim_out(out: Path) -> None:
    """Refuse, before any work, an --out that is not absent, an empty directory, or an edgekit bundle."""
    if out.is_symlink():
        raise EdgekitError(f"--out {out}: is a symbolic link; give a real directory path")
    if not out.exists():
        parent = out.parent if str(out.parent) else Path(".")
        if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
            raise EdgekitError(f"--out {out}: cannot create it, {parent} is not writable")
        return
    if not out.is_dir():
        raise EdgekitError(f"--out {out}: exists and is not a directory; choose another --out")
    if os.path.ismount(out):
        raise EdgekitError(
            f"--out {out}: is a mount point; a build replaces its --out by renaming, so give a directory inside it"
        )
    foreign = entries_not_from_a_bundle(out)
    if foreign:
        raise EdgekitError(
            f"--out {out}: exists and is not an edgekit bundle (it holds {_few(foreign)}); "
            "choose another --out or empty it: edgekit never deletes files it did not write"
        )


def stage_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


class StageRunner:
    def __init__(self, out: Path, on_stage: Callable[[str, str], None] | None = None):
        self.out = Path(out)
        claim_out(self.out)
        self.work = self.out.with_name(self.out.name + ".partial")
        self.bundle = self.work / "bundle"
        self.markers = self.work / "stages"
        self._lock_fd = self._take_work_dir()
        try:
            self.bundle.mkdir(parents=True, exist_ok=True)
            self.markers.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(self.work, e) from None
        self.on_stage = on_stage or (lambda name, status: None)
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def _take_work_dir(self) -> int:
        """Create (or reuse, if edgekit made it) OUT.partial and hold an exclusive lock on it for the build."""
        work = self.work
        if work.is_symlink() or (work.exists() and not work.is_dir()):
            raise EdgekitError(f"{work}: exists and is not a build work directory; move it away and rerun")
        try:
            work.mkdir(exist_ok=True)
        except OSError as e:
            raise write_error(work, e) from None
        fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise EdgekitError(
                    f"--out {self.out}: another edgekit build is writing it right now ({work} is "
                    "locked); wait for it to finish or choose another --out",
                    exit_code=1,
                ) from None
            raise
        if os.fstat(fd).st_ino != os.stat(work).st_ino:  # the other build finished and removed it meanwhile
            os.close(fd)
            raise EdgekitError(f"--out {self.out}: another build just finished writing it; rerun", exit_code=1)
        owner = work / OWNER
        if owner.is_file() and owner.read_text(errors="replace") == OWNER_TEXT:
            return fd
        if any(work.iterdir()):
            os.close(fd)
            raise EdgekitError(
                f"{work}: exists and was not made by edgekit build (it holds {_few(sorted(p.name for p in work.iterdir()))}); "
                "move it away and rerun"
            )
        try:
            owner.write_text(OWNER_TEXT)
        except OSError as e:
            os.close(fd)
            raise write_error(owner, e) from None
        return fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def _outputs_intact(self, marker: dict) -> bool:
        for rel, digest in marker["outputs"].items():
            p = self.bundle / rel
            if not p.is_file() or sha256_file(p) != digest:
                return False
        return True

    def run(self, name: str, inputs: dict, produce: Callable[[Path], list[str]]) -> str:
        """Run `produce(bundle_dir) -> [relative output paths]` unless an intact result with the same key exists.

        Returns the stage key, which later stages include in their own inputs.
        """
        key = stage_key({"stage": name, **inputs})
        marker_path = self.markers / f"{name}.json"
        if marker_path.is_file():
            from edgekit.json_files import read_json

            try:
                marker = read_json(marker_path)
            except EdgekitError:
                marker = None
            if marker and marker.get("key") == key and self._outputs_intact(marker):
                self.skipped.append(name)
                self.on_stage(name, "cached")
                return key
            marker_path.unlink()
        self.on_stage(name, "running")
        outputs = produce(self.bundle)
        write_json(
            marker_path, {"key": key, "outputs": {rel: sha256_file(self.bundle / rel) for rel in sorted(outputs)}}
        )
        self.ran.append(name)
        self.on_stage(name, "done")
        return key

    def prune_unclaimed(self) -> list[str]:
        """Delete files in the bundle that no finished stage claims (temp files of killed stages, stale outputs)."""
        claimed: set[str] = set()
        for marker in self.markers.glob("*.json"):
            from edgekit.json_files import read_json

            claimed |= set(read_json(marker)["outputs"])
        removed = []
        for p in sorted(self.bundle.rglob("*")):
            rel = str(p.relative_to(self.bundle))
            if p.is_file() and rel not in claimed:
                p.unlink()
                removed.append(rel)
        for d in sorted((p for p in self.bundle.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(d.iterdir()):
                d.rmdir()
        return removed

    def finish(self) -> Path:
        """Move the finished (and verified) bundle to OUT and drop the work dir. A previous bundle at OUT is moved
        into the work dir first, and deleted only with it: nothing outside OUT and OUT.partial is touched."""
        claim_out(self.out)  # still absent, empty or a bundle (checked again: the user may have used it meanwhile)
        replaced = self.work / "replaced"
        shutil.rmtree(replaced, ignore_errors=True)  # left by a build killed between the two renames below
        try:
            if self.out.exists():
                self.out.rename(replaced)
            self.bundle.rename(self.out)
        except OSError as e:
            raise write_error(self.out, e) from None
        shutil.rmtree(self.work, ignore_errors=True)
        self.close()
        return self.out
