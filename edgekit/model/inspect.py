"""What `edgekit inspect` reports about a checkpoint, as plain data (no printing here); the weight bytes per format
that it also prints come from the plan's sizes (edgekit.targets.sizes)."""

from __future__ import annotations

from edgekit.model.checkpoint import Checkpoint


def describe(ck: Checkpoint) -> dict:
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
        "token_ids": {
            "image": ids.image,
            "video": ids.video,
            "vision_start": ids.vision_start,
            "vision_end": ids.vision_end,
            "bos": ids.bos,
            "eos": ids.eos,
        },
        "special_tokens": dict(sorted(ck.special_tokens.items(), key=lambda kv: kv[1])),
        "chat_template": ck.chat_template is not None,
        "files": sorted(str(p.relative_to(ck.path)) for p in ck.files_for_hash()),
        "tensors": len(ck.tensors),
    }
