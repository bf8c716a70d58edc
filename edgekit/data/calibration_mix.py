"""The default calibration set (`--samples default`): what each source contributes, and where the real samples are.

Sources, with their share of `n` sequences and their length cap:

  real     50%  the real benchmark samples' calibration split (image, question, reference answer) from
                $EDGEKIT_REAL_SAMPLES, else ../shared/data/samples beside the repository; when neither
                exists its share goes to the built-in samples
  builtin  25%  edgekit's own synthetic driving and embodied samples (calibration split)
  text     25%  generic prose and code (data/text/generic_text.jsonl), raw text with no chat template,
                at most TEXT_TOKENS tokens each: keeps the decoder's language statistics in the Hessians

Image+text sequences are as long as the chat template, image tokens and answer make them (~100–600 tokens at
224x224); generic passages are cut at TEXT_TOKENS, one sequence per passage at most. Every share is rounded
down and the remainder goes to the first source (real, else builtin), so the counts always add up to `n`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.json_files import parse_json

DEFAULT_SPEC = "default"
REAL_ENV = "EDGEKIT_REAL_SAMPLES"
REAL_FILES = ("driving.jsonl", "embodied.jsonl")
GENERIC_TEXT = Path(__file__).resolve().parent / "text" / "generic_text.jsonl"
SHARES = (("real", 0.5), ("builtin", 0.25), ("text", 0.25))
TEXT_TOKENS = 256


def real_samples_files() -> list[Path]:
    """The real samples' JSONL files: $EDGEKIT_REAL_SAMPLES (a folder; 'off' disables), else the shared folder
    beside the repository when it exists; [] when there is none."""
    env = os.environ.get(REAL_ENV)
    if env == "off":
        return []
    folder = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data" / "samples"
    if env and not folder.is_dir():
        raise EdgekitError(f"{REAL_ENV}={env}: no such folder")
    return [folder / f for f in REAL_FILES if (folder / f).is_file()]


@dataclass(frozen=True)
class Passage:
    id: str
    text: str


def load_passages(path: Path = GENERIC_TEXT) -> list[Passage]:
    """Generic text passages, one JSON object a line: {"id", "text"}; errors name file:line."""
    out, errors = [], []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = parse_json(line, f"{path}:{lineno}")
            if not isinstance(r["text"], str) or not r["text"].strip():
                raise ValueError("'text' must be a non-empty string")
            out.append(Passage(str(r["id"]), r["text"]))
        except (ValueError, KeyError, TypeError) as e:
            errors.append(f"{path}:{lineno}: {e}")
        except EdgekitError as e:
            errors.append(e.message)
    if errors:
        raise EdgekitError("; ".join(errors))
    return out


def counts(n: int, have_real: bool, n_passages: int) -> dict[str, int]:
    """Sequences per source for `n` in total (see the module docstring)."""
    if n < 1:
        raise EdgekitError(f"calibration needs at least 1 sequence, got {n}")
    got = {name: int(n * share) for name, share in SHARES}
    got["text"] = min(got["text"], n_passages)  # one sequence per passage at most
    if not have_real:
        got["builtin"] += got.pop("real")
    first = next(iter(got))
    got[first] += n - sum(got.values())
    return got
