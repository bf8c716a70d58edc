"""The samples a benchmark answers: parsed, split, mixed, and their images opened, before any model loads.

A malformed line stops the run as `file:line: what is wrong` (every such line listed, the first ten shown);
`--skip-bad` skips those lines instead and the report counts them. Image and mask files are opened (headers only)
here too, so a corrupt picture is found in a second, not an hour into the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgekit.data.samples import Sample, parse_jsonl, resolve_spec, summarize_errors
from edgekit.errors import EdgekitError


@dataclass
class Selection:
    samples: list[Sample]
    files: list[Path]
    skipped: list[str] = field(default_factory=list)  # 'file:line: reason' of every line left out (--skip-bad)


def select_samples(spec, *, split_name: str | None, n: int | None, seed: int, skip_bad: bool) -> Selection:
    from edgekit.data.selection import effective_split, mix

    files = resolve_spec(spec)
    samples, errors = [], []
    for f in files:
        got, errs = parse_jsonl(f)
        samples += got
        errors += errs
    readable = []
    for s in samples:
        problem = _unreadable(s)
        if problem:
            errors.append(f"{s.where}: {problem}")
        else:
            readable.append(s)
    if errors and not skip_bad:
        raise EdgekitError(summarize_errors(errors, fix="Fix these lines, or pass --skip-bad to leave them out"))
    chosen = [s for s in readable if s.answer is not None or s.box is not None or s.point is not None]
    if split_name is not None:
        chosen = [s for s in chosen if effective_split(s) == split_name]
    if not chosen:
        raise EdgekitError(f"{spec}: no sample with a reference answer in split {split_name or 'all'!r}")
    chosen = mix(chosen, n if n is not None else len(chosen), seed)
    return Selection(chosen, files, errors)


def _unreadable(s: Sample) -> str | None:
    from PIL import Image

    paths = list(s.images or (s.image,)) + ([s.mask] if s.mask is not None else [])
    for p in paths:
        try:
            with Image.open(p) as im:
                _ = im.size  # the header is parsed on open; the size proves it names an image
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            return f"{p}: not a readable image ({e.__class__.__name__})"
    return None
