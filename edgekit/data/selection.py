"""Which samples a job uses: the calibration/evaluation split of each sample (stable, by image) and a seeded mix
that takes domains and task types in turn."""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from typing import Iterable, Sequence

from edgekit.data.samples import SPLITS, Sample
from edgekit.errors import EdgekitError


def effective_split(s: Sample) -> str:
    """The sample's split; when the file gives none, a stable hash of the image path decides
    (half and half), so every sample of one image lands on the same side. No answer -> calib."""
    if s.split is not None:
        return s.split
    if s.answer is None:
        return "calib"
    digest = hashlib.sha256(s.image.name.encode("utf-8")).digest()
    return "eval" if digest[0] % 2 else "calib"


def split(samples: Iterable[Sample], which: str) -> list[Sample]:
    """Samples of one split: 'calib' (calibration, QAT) or 'eval' (measuring). Eval never includes
    samples without a reference answer."""
    if which not in SPLITS:
        raise EdgekitError(f"split {which!r}: expected 'calib' or 'eval'")
    return [s for s in samples if effective_split(s) == which and (which == "calib" or s.answer is not None)]


def mix(samples: Sequence[Sample], n: int, seed: int = 0) -> list[Sample]:
    """`n` samples balanced across domains (and across tasks within a domain), drawn with `seed`.
    Round-robin over shuffled groups, so a domain that runs out leaves its turns to the others."""
    if n < 0:
        raise EdgekitError(f"mix: n must be >= 0, got {n}")
    rng = random.Random(seed)
    by_domain: dict[str, list[Sample]] = {}
    for domain in sorted({s.domain for s in samples}):
        by_task = defaultdict(list)
        for s in samples:
            if s.domain == domain:
                by_task[s.task].append(s)
        groups = [by_task[t] for t in sorted(by_task)]
        for g in groups:
            rng.shuffle(g)
        by_domain[domain] = _round_robin(groups)
    streams = [iter(g) for g in by_domain.values()]
    return list(_take_round_robin(streams, n))


def _round_robin(groups: list[list[Sample]]) -> list[Sample]:
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out += [g[i] for g in groups if i < len(g)]
        i += 1
    return out


def _take_round_robin(streams: list, n: int):
    taken, live = 0, list(streams)
    while live and taken < n:
        for it in list(live):
            if taken >= n:
                return
            item = next(it, None)
            if item is None:
                live.remove(it)
                continue
            taken += 1
            yield item


def counts(samples: Iterable[Sample]) -> dict[tuple[str, str, str], int]:
    """(domain, task, split) -> number of samples, sorted."""
    c = Counter((s.domain, s.task, effective_split(s)) for s in samples)
    return dict(sorted(c.items()))
