"""What `edgekit inspect` reports about a checkpoint, as plain data (no printing here)."""

from __future__ import annotations

from edgekit.model.checkpoint import Checkpoint
from edgekit.model.sizes import inspect_weight_bytes


def describe(ck: Checkpoint) -> dict:
    shapes = {name: info.shape for name, info in ck.tensors.items()}
    dtypes = sorted({info.dtype for info in ck.tensors.values()})
    ids = ck.token_ids
    return {
        "path": str(ck.path),
        "architecture": (ck.config.get("architectures") or ["?"])[0],
        "model_type": ck.config.get("model_type"),
        "stored_dtypes": dtypes,
        "text": ck.text.as_dict(),
        "vision": ck.vision.as_dict(),
        "parameters": ck.parameter_counts(),
        "weight_bytes": inspect_weight_bytes(shapes),
        "token_ids": {
            "image": ids.image, "video": ids.video, "vision_start": ids.vision_start, "vision_end": ids.vision_end,
            "bos": ids.bos, "eos": ids.eos,
        },
        "special_tokens": dict(sorted(ck.special_tokens.items(), key=lambda kv: kv[1])),
        "chat_template": ck.chat_template is not None,
        "files": sorted(str(p.relative_to(ck.path)) for p in ck.files_for_hash()),
        "tensors": len(ck.tensors),
    }
