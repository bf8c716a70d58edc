"""The JSONL sample format: load and validate, and render reference answers for teacher forcing.
Splits and domain mixing are data/selection.py; scoring is bench/scoring.py. One sample a line: {"id", "domain",
"task", "image", "question", "answer", "choices"?, "box"?, "point"?, "split"?, "images"?, "mask"?, "answer_text"?,
...}; paths relative to the file; other fields kept in `Sample.extra`. docs/samples.md describes it for users.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from edgekit.data.calibration_mix import real_samples_files
from edgekit.errors import EdgekitError
from edgekit.json_files import parse_json
from edgekit.safe_files import read_text

DOMAINS = ("driving", "embodied")
TASKS = ("multiple_choice", "short_answer", "open_ended", "box_grounding", "point_grounding", "calibration_only")
SPLITS = ("calib", "eval")
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUILTIN_SETS = {"driving": ASSETS_DIR / "driving.jsonl", "embodied": ASSETS_DIR / "embodied.jsonl"}
REQUIRED = ("id", "domain", "task", "image", "question")
KNOWN = set(REQUIRED) | {"answer", "choices", "answer_text", "box", "point", "split", "images", "mask"}
MAX_LISTED_ERRORS = 10


@dataclass(frozen=True)
class Sample:
    id: str
    domain: str
    task: str
    image: Path  # absolute; the first camera when `images` has several
    question: str
    answer: Any  # str (letter for multiple choice), box, points/polygons, or None (calibration only)
    split: str | None = None
    choices: tuple[str, ...] | None = None
    answer_text: str | None = None
    box: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 in pixels of `image`
    point: tuple[float, float] | None = None  # x, y in pixels of `image`
    images: tuple[Path, ...] = ()
    mask: Path | None = None  # ground-truth region for point grounding (non-zero = inside)
    extra: dict = field(default_factory=dict, compare=False)  # every field this format does not define
    source_file: Path | None = field(default=None, compare=False)
    line: int = field(default=0, compare=False)

    def __hash__(self) -> int:  # answers may be lists; a sample is identified by where it came from
        return hash((self.id, self.image, self.source_file, self.line))

    @property
    def where(self) -> str:
        return f"{self.source_file}:{self.line}"

    def image_size(self) -> tuple[int, int]:
        """(width, height) of the (first) image from its header, without decoding the pixels."""
        from PIL import Image

        try:
            with Image.open(self.image) as im:
                return im.size
        except (OSError, SyntaxError, ValueError) as e:
            raise EdgekitError(
                f"{self.where}: {self.image}: not a readable image ({e}); fix or remove that line"
            ) from None

    def load_image(self):
        """Decode the (first) image now: RGB PIL image, or EdgekitError naming the sample and file."""
        return _load_rgb(self.image, self.where)

    def load_images(self) -> list:
        return [_load_rgb(p, self.where) for p in (self.images or (self.image,))]

    def load_mask(self):
        """Ground-truth mask as a bool numpy array [H, W], or None when the sample has none."""
        if self.mask is None:
            return None
        import numpy as np

        from edgekit.data.images import load_image

        try:
            return np.asarray(load_image(self.mask).convert("L")) > 0  # [H, W]
        except EdgekitError as e:
            raise EdgekitError(f"{self.where}: mask of sample {self.id!r}: {e.message}") from None


def _load_rgb(path: Path, where: str):
    from edgekit.data.images import load_image

    try:
        return load_image(path)
    except EdgekitError as e:
        raise EdgekitError(f"{where}: {e.message}; fix or remove that line") from None


# ---------------------------------------------------------------- loading and validation


def load_samples(spec: str | Path | Sequence[str | Path]) -> list[Sample]:
    """Samples from a .jsonl file, a directory of .jsonl files, a built-in set name ("driving", "embodied",
    "default": real + built-in), or several joined by commas. Raises one EdgekitError listing every problem."""
    files = resolve_spec(spec)
    samples: list[Sample] = []
    errors: list[str] = []
    for f in files:
        got, errs = parse_jsonl(f)
        samples += got
        errors += errs
    if errors:
        raise EdgekitError(summarize_errors(errors))
    return samples


def resolve_spec(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    parts: list[str | Path] = []
    for item in [spec] if isinstance(spec, (str, Path)) else list(spec):
        if isinstance(item, str) and "," in item and not Path(item).exists():
            parts += [p.strip() for p in item.split(",") if p.strip()]
        else:
            parts.append(item)
    files: list[Path] = []
    for part in parts:
        if part == "default":  # the real samples when present, then the built-in ones (data/calibration_mix.py)
            files += real_samples_files() + list(BUILTIN_SETS.values())
            continue
        if isinstance(part, str) and part in BUILTIN_SETS:
            files.append(BUILTIN_SETS[part])
            continue
        p = Path(part)
        if p.is_dir():
            found = sorted(p.glob("*.jsonl"))
            if not found:
                raise EdgekitError(f"{p}: directory has no *.jsonl sample files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise EdgekitError(
                f"{part}: no such sample file or directory, and not a built-in set (built-in: {', '.join(BUILTIN_SETS)})"
            )
    return files


def parse_jsonl(path: Path) -> tuple[list[Sample], list[str]]:
    """Parse and validate every line of one file; returns (samples, ['file:line: reason', ...])."""
    path = Path(path)
    try:
        text = read_text(path, max_bytes=256 << 20)
    except EdgekitError as e:  # not a regular file, too large, not UTF-8
        return [], [e.message]
    samples, errors, seen_ids = [], [], {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = parse_json(raw, where)
            if not isinstance(record, dict):
                raise EdgekitError(f"{where}: a line must be a JSON object, got {type(record).__name__}")
        except EdgekitError as e:
            errors.append(e.message.replace("not valid JSON", "bad JSON", 1))
            continue
        problems = validate_record(record, path.parent)
        if not problems and record["id"] in seen_ids:
            problems = [f"duplicate id {record['id']!r} (first on line {seen_ids[record['id']]})"]
        if problems:
            errors += [f"{where}: {p}" for p in problems]
            continue
        seen_ids[record["id"]] = lineno
        samples.append(_to_sample(record, path, lineno))
    return samples, errors


def validate_record(r: dict, base: Path) -> list[str]:
    """Everything wrong with one record (empty list = valid). Image files must exist; they are not decoded."""
    missing = [k for k in REQUIRED if k not in r]
    if missing:
        return [f"missing required field {', '.join(repr(k) for k in missing)}"]
    out = []
    for key in ("id", "question", "image"):
        if not isinstance(r[key], str) or not r[key].strip():
            out.append(f"field {key!r} must be a non-empty string, got {r[key]!r}")
    if r["domain"] not in DOMAINS:
        out.append(f"bad domain {r['domain']!r} (expected one of {', '.join(DOMAINS)})")
    if r["task"] not in TASKS:
        out.append(f"bad task {r['task']!r} (expected one of {', '.join(TASKS)})")
    if "split" in r and r["split"] not in SPLITS:
        out.append(f"bad split {r['split']!r} (expected calib or eval, or leave it out)")
    if "answer" not in r and r["task"] != "calibration_only":
        out.append("missing required field 'answer' (use null for calibration-only prompts)")
    if "choices" in r and not (
        isinstance(r["choices"], list) and r["choices"] and all(isinstance(c, str) for c in r["choices"])
    ):
        out.append(f"field 'choices' must be a non-empty list of strings, got {_short(r['choices'])}")
    if "answer_text" in r and r["answer_text"] is not None and not isinstance(r["answer_text"], str):
        out.append("field 'answer_text' must be a string")
    if "box" in r and not _is_numbers(r["box"], 4):
        out.append(f"field 'box' must be 4 numbers [x1, y1, x2, y2], got {_short(r['box'])}")
    elif "box" in r and not _is_box(r["box"]):
        out.append(
            f"field 'box' has x1 > x2 or y1 > y2 (corners must be top-left then bottom-right), got {_short(r['box'])}"
        )
    if "point" in r and not _is_numbers(r["point"], 2):
        out.append(f"field 'point' must be 2 numbers [x, y], got {_short(r['point'])}")
    if "images" in r and not (
        isinstance(r["images"], list) and r["images"] and all(isinstance(p, str) and p for p in r["images"])
    ):
        out.append("field 'images' must be a non-empty list of image paths")
    if "mask" in r and not (isinstance(r["mask"], str) and r["mask"]):
        out.append("field 'mask' must be an image path")
    if out:
        return out
    out += _validate_answer(r)
    for key, rel in (
        [("image", r["image"])]
        + [("images", p) for p in r.get("images", [])]
        + ([("mask", r["mask"])] if "mask" in r else [])
    ):
        if not (base / rel).is_file():
            out.append(f"{key} file not found: {base / rel}")
    return out


def _validate_answer(r: dict) -> list[str]:
    task, answer = r["task"], r.get("answer")
    if answer is None:
        return []  # a prompt without reference: usable for calibration only
    if task == "multiple_choice":
        if "choices" not in r:
            return ["multiple_choice needs 'choices' (a list of option texts)"]
        n = len(r["choices"])
        if not (isinstance(answer, str) and len(answer) == 1 and 0 <= ord(answer.upper()) - ord("A") < n):
            return [f"multiple_choice 'answer' must be a letter A..{chr(ord('A') + n - 1)}, got {_short(answer)}"]
    elif task in ("short_answer", "open_ended"):
        if not isinstance(answer, (str, int, float)) or isinstance(answer, bool):
            return [f"{task} 'answer' must be a string or number, got {_short(answer)}"]
    elif task == "box_grounding":
        if "box" not in r and not _is_box(answer):
            return [f"box_grounding needs 'box' or an 'answer' of 4 numbers [x1, y1, x2, y2], got {_short(answer)}"]
    elif task == "point_grounding":
        if "point" not in r and "box" not in r and "mask" not in r and point_lists(answer) is None:
            return ["point_grounding needs 'point', 'box', 'mask', or an 'answer' of points/polygons [[x, y], ...]"]
    return []


def _to_sample(r: dict, path: Path, lineno: int) -> Sample:
    base = path.parent.resolve()
    task = r["task"]
    box = r.get("box")
    if box is None and task == "box_grounding" and _is_box(r.get("answer")):
        box = r["answer"]
    answer = r.get("answer")
    if task == "multiple_choice" and isinstance(answer, str):
        answer = answer.upper()
    return Sample(
        id=r["id"],
        domain=r["domain"],
        task=task,
        image=base / r["image"],
        question=r["question"],
        answer=answer,
        split=r.get("split"),
        choices=tuple(r["choices"]) if "choices" in r else None,
        answer_text=r.get("answer_text"),
        box=tuple(float(v) for v in box) if box is not None else None,
        point=tuple(float(v) for v in r["point"]) if "point" in r else None,
        images=tuple(base / p for p in r.get("images", [])),
        mask=base / r["mask"] if "mask" in r else None,
        extra={k: v for k, v in r.items() if k not in KNOWN},
        source_file=path,
        line=lineno,
    )


def _is_numbers(v, n: int) -> bool:
    return (
        isinstance(v, list)
        and len(v) == n
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
    )


def _is_box(v) -> bool:
    return _is_numbers(v, 4) and v[0] <= v[2] and v[1] <= v[3]


def point_lists(answer) -> list[list[tuple[float, float]]] | None:
    """An answer of points as a list of point lists: [x, y] -> [[p]]; [[x, y], ...] -> [[...]];
    [[[x, y], ...], ...] (polygons) -> as is. None when it is none of these."""
    if _is_numbers(answer, 2):
        return [[tuple(answer)]]
    if isinstance(answer, list) and answer and all(_is_numbers(p, 2) for p in answer):
        return [[tuple(p) for p in answer]]
    if (
        isinstance(answer, list)
        and answer
        and all(isinstance(g, list) and g and all(_is_numbers(p, 2) for p in g) for g in answer)
    ):
        return [[tuple(p) for p in g] for g in answer]
    return None


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


def summarize_errors(errors: list[str], fix: str = "Fix these lines") -> str:
    """One message for many bad lines: how many, the first few as 'file:line: reason', and what to do."""
    more = f"; ... and {len(errors) - MAX_LISTED_ERRORS} more" if len(errors) > MAX_LISTED_ERRORS else ""
    return f"{len(errors)} invalid sample line(s): {'; '.join(errors[:MAX_LISTED_ERRORS])}{more}. {fix} (format: docs/samples.md)"
