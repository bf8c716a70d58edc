"""Reading the JSON files edgekit consumes (config, tokenizer, processor, manifest): one error line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.errors import EdgekitError


def read_json(path: Path):
    """The parsed file, or EdgekitError naming it when it is missing, not UTF-8 or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgekitError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"{path}: not valid JSON ({e})") from None


def read_json_object(path: Path, *, optional: bool = False) -> dict:
    """A JSON file that must hold an object ({} for a missing optional file)."""
    if optional and not Path(path).is_file():
        return {}
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise EdgekitError(f"{path}: must hold a JSON object, not {type(obj).__name__}")
    return obj
