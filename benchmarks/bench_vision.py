"""Vision tower latency at one resolution: ONNX Runtime FP32 / FP16 / INT8 QDQ vs PyTorch eager, measured side by side.

Ratios are to PyTorch eager (transformers' own vision tower, float32) in the same run: these
machines are noisy, so only ratios from one run mean anything. Median of --repeat runs after a warm-up.

Regenerate:  python benchmarks/bench_vision.py --preset medium --resolution 448x448 --json bench_vision.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gguf import make_checkpoint  # noqa: E402


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    import torch

    from edgekit.cli.options import parse_resolution
    from edgekit.data.calibration_images import patch_batches, sample_images, split_calibration
    from edgekit.export.vision_int8 import FLOAT_PARTS, quantize_int8
    from edgekit.export.vision_onnx import export_float
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.processor import load_processor_config
    from edgekit.quant.evaluate import load_reference
    from edgekit.runtime.onnx_vision import OnnxVision

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--resolution", default="448x448")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgekit-bench-vision-"))
    ckpt = make_checkpoint(work, args.preset, None)
    ck = open_checkpoint(ckpt)
    width, height = parse_resolution(args.resolution)
    info = export_float(ck, width, height, 1, "fp32", work / "fp32.onnx")
    export_float(ck, width, height, 1, "fp16", work / "fp16.onnx")
    proc = load_processor_config(ckpt)
    calib, held = split_calibration(sample_images(["driving", "embodied"]), 16, 1)
    # the bundle's INT8 graph: percentile ranges, GPTQ-rounded codes, patch embedding and merger in float
    quantize_int8(work / "fp32.onnx", work / "int8.onnx", patch_batches(calib, info, proc), method="percentile",
                  float_parts=FLOAT_PARTS, gptq=True)
    patches = patch_batches(held, info, proc)[0]
    grid = np.asarray([[1, info.grid_h, info.grid_w]])
    model = load_reference(ckpt)
    pv, g = torch.from_numpy(patches), torch.from_numpy(grid)

    def eager():
        with torch.no_grad():
            model.model.get_image_features(pixel_values=pv, image_grid_thw=g)

    rows = {"pytorch_eager_fp32": timed(eager, args.repeat)}
    for name in ("fp32", "fp16", "int8"):
        rt = OnnxVision(work / f"{name}.onnx")
        rows[f"ort_{name}"] = timed(lambda: rt.encode(patches, grid), args.repeat)
    base = rows["pytorch_eager_fp32"]
    for k, v in rows.items():
        print(f"{k:>20}: {v * 1e3:8.1f} ms  ({base / v:.2f}x vs eager)")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "preset": args.preset, "resolution": args.resolution,
                                         "tokens": info.tokens, "seconds": rows,
                                         "speedup_vs_eager": {k: base / v for k, v in rows.items()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
