"""Where edgekit keeps state between runs (calibrations, measured runtime settings)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$EDGEKIT_CACHE_DIR, else $XDG_CACHE_HOME/edgekit, else ~/.cache/edgekit."""
    if os.environ.get("EDGEKIT_CACHE_DIR"):
        return Path(os.environ["EDGEKIT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit"
