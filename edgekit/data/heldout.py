"""The held-out evaluation set (edgekit/data/heldout/): prompts unlike every calibration source, by construction.

Written for measuring quantization off the calibration distribution (benchmarks/bench_quality.py): other
phrasing (advice, explanations, logs, checklists in the first person rather than benchmark questions), other
images (scripts/make_heldout_images.py: night, rain, overhead, tunnel, tabletop, shelf views at odd sizes),
text-only and image+text. Each item is a prompt and a partial answer, teacher-forced through the chat template.
tests/data/test_heldout.py asserts that no image and no 5-word phrase is shared with any calibration source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.json_files import parse_json

HELDOUT_DIR = Path(__file__).resolve().parent / "heldout"
HELDOUT_FILE = HELDOUT_DIR / "heldout.jsonl"
FIELDS = ("id", "domain", "style", "prompt", "continuation")


@dataclass(frozen=True)
class HeldoutItem:
    id: str
    domain: str  # driving | embodied
    style: str
    prompt: str
    continuation: str  # the partial answer, teacher-forced after the prompt
    image: Path | None = None


def load_heldout(path: Path = HELDOUT_FILE) -> list[HeldoutItem]:
    """Every item of a held-out JSONL file (image paths relative to it); errors name file:line."""
    path = Path(path)
    items, errors = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = parse_json(line, f"{path}:{lineno}")
            if not isinstance(r, dict):
                raise ValueError("a line must be a JSON object")
            missing = [f for f in FIELDS if not isinstance(r.get(f), str) or not r[f].strip()]
            if missing:
                raise ValueError(f"missing or empty {', '.join(missing)}")
            image = path.parent / r["image"] if "image" in r else None
            if image is not None and not image.is_file():
                raise ValueError(f"image {r['image']} not found")
            items.append(HeldoutItem(*(r[f] for f in FIELDS), image=image))
        except ValueError as e:
            errors.append(f"{path}:{lineno}: {e}")
        except EdgekitError as e:
            errors.append(e.message)
    if errors:
        raise EdgekitError("; ".join(errors))
    return items
