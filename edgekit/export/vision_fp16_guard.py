"""Which vision blocks may run in FP16: measured on calibration images before an FP16 graph is written.

FP16 ends at 65,504. The real MiMo-Embodied tower reportedly carries activations of ~5e4 from block 17 on (massive
activations in the residual stream, as trained transformers grow them); random weights never do. So before exporting
FP16, the FP32 torch tower runs the calibration images and records each block's largest |activation| (its input and
output residual stream, the MLP's hidden product and its down projection). A block whose peak comes within MARGIN
of FP16's largest value stays FP32 in the graph (weights and compute; the stream is narrowed to FP16 again only where
the next block runs FP16), and the manifest records which. The numerics are pure; the tower does the probing.
"""

from __future__ import annotations

FP16_MAX = 65504.0
MARGIN = 4.0  # a block runs FP16 only when its calibration peak leaves this much headroom below FP16_MAX
GUARD_IMAGES = 8  # calibration images run through the FP32 tower (each is a full tower forward)


def blocks_to_keep_fp32(peaks: list[float], margin: float = MARGIN) -> list[int]:
    """The blocks whose largest activation (NaN/inf included) is within `margin` of FP16's range."""
    limit = FP16_MAX / margin
    return [i for i, p in enumerate(peaks) if not p <= limit]


def block_peaks(checkpoint, plan, batches) -> list[float]:
    """Largest |activation| per block of the FP32 tower over patch batches (float32 [P, patch_dim] each)."""
    import torch

    from edgekit.export.vision_static import build_static_tower

    tower = build_static_tower(checkpoint, plan)
    tower.peaks = [0.0] * checkpoint.vision.depth
    with torch.no_grad():
        for x in batches:
            tower(torch.from_numpy(x))
    return tower.peaks


def guard_report(peaks: list[float], kept: list[int]) -> dict:
    return {"fp16_max": FP16_MAX, "margin": MARGIN, "block_peaks": [round(p, 3) for p in peaks], "fp32_blocks": kept}
