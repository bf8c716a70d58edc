"""Option values the CLI reads from text, parsed once for every command."""

from __future__ import annotations

from edgekit.errors import EdgekitError
from edgekit.quant.formats import FORMATS, GGUF_FORMATS

DEVICE_OPTION_DEFAULT = "auto"

CALIBRATION_SAMPLES_HELP = (
    "Calibration samples: default (the real samples' calibration split when present, the "
    "built-in samples and generic text; docs/samples.md), built-in names (driving,embodied), "
    "JSONL files or folders, comma-separated."
)


def parse_resolution(text: str) -> tuple[int, int]:
    """'448x448' -> (width, height) in pixels."""
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) <= 0:
        raise EdgekitError(f"--resolution {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 448x448 or 1024x484")
    return int(parts[0]), int(parts[1])


# The GGUF tensor types a decoder can be written in, as --precision / --gguf-type spell them (help text only:
# edgekit.quant.formats.parse validates; the bare GGUF type is the gguf: format).
GGUF_TYPES = tuple(FORMATS[name].type_name for name in GGUF_FORMATS)
