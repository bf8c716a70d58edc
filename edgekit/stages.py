"""Resumable build stages keyed by content hash.

A build works in `OUT.partial/`: the bundle being assembled in `OUT.partial/bundle/` and one
marker per finished stage in `OUT.partial/stages/`. A marker records the stage's key (a hash of
everything the stage's output depends on) and the sha256 of each file it produced. On a rerun a
stage is skipped only when its key matches and its outputs are still byte-for-byte what it wrote;
anything else (killed mid-stage, a changed input, a corrupted file) reruns it. Stages write their
outputs atomically, so a kill leaves either the old state or the new one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

from edgekit.atomic import write_json
from edgekit.model.checkpoint import sha256_file


def stage_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


class StageRunner:
    def __init__(self, out: Path, on_stage: Callable[[str, str], None] | None = None):
        self.out = Path(out)
        self.work = self.out.with_name(self.out.name + ".partial")
        self.bundle = self.work / "bundle"
        self.markers = self.work / "stages"
        self.bundle.mkdir(parents=True, exist_ok=True)
        self.markers.mkdir(parents=True, exist_ok=True)
        self.on_stage = on_stage or (lambda name, status: None)
        self.ran: list[str] = []
        self.skipped: list[str] = []

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
            try:
                marker = json.loads(marker_path.read_text())
            except json.JSONDecodeError:
                marker = None
            if marker and marker.get("key") == key and self._outputs_intact(marker):
                self.skipped.append(name)
                self.on_stage(name, "cached")
                return key
            marker_path.unlink()
        self.on_stage(name, "running")
        outputs = produce(self.bundle)
        write_json(marker_path, {"key": key, "outputs": {rel: sha256_file(self.bundle / rel) for rel in sorted(outputs)}})
        self.ran.append(name)
        self.on_stage(name, "done")
        return key

    def prune_unclaimed(self) -> list[str]:
        """Delete files in the bundle that no finished stage claims (temp files of killed stages, stale outputs)."""
        claimed: set[str] = set()
        for marker in self.markers.glob("*.json"):
            claimed |= set(json.loads(marker.read_text())["outputs"])
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
        """Move the finished bundle to OUT (replacing an older bundle) and drop the work dir."""
        old = self.out.with_name(self.out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if self.out.exists():
            self.out.rename(old)
        self.bundle.rename(self.out)
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        return self.out
