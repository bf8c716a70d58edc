"""Vision tower latency and INT8 accuracy at one resolution: ONNX Runtime FP32 / FP16 / INT8 graphs vs PyTorch eager.

INT8 graphs: the QDQ graph TensorRT gets (percentile ranges, GPTQ-rounded codes, patch embedding and merger
in float), the CPU bundle's graph (the same codes and scales on ONNX Runtime's integer MatMuls,
edgekit/export/vision_int8_cpu.py), and ONNX Runtime's own dynamic quantization for comparison. Calibration
on the default mix's images (real calibration split when present + built-in), accuracy as 1 − cosine to the
FP32 graph on --held images of the eval split. Ratios are to PyTorch eager (transformers' own vision tower,
float32) and to ORT FP32, in the same run, rounds alternated: these machines are noisy, so only ratios from
one run mean anything. Median of --repeat rounds after a warm-up.

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


def ort_dynamic_int8(fp32: Path, out: Path, float_parts) -> None:
    """ONNX Runtime's own dynamic quantization of the same weight products (per-channel int8 weights, activations
    quantized per tensor at run time), the comparison row: nothing calibrated."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgekit.export.vision_int8 import part_matmuls, weight_matmuls

    model = onnx.load(str(fp32))
    _, acts = weight_matmuls(model)
    exclude = acts + [n for part in float_parts for n in part_matmuls(model, part)]
    quantize_dynamic(
        str(fp32),
        str(out),
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=exclude,
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )


def main() -> None:
    import torch

    from edgekit.cli.options import parse_resolution
    from edgekit.export.calibration_images import patch_batches, sample_images, split_calibration
    from edgekit.export.vision_int8 import FLOAT_PARTS, quantize_int8
    from edgekit.export.vision_int8_cpu import write_integer_graph
    from edgekit.export.vision_onnx import export_float
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.processor import load_processor_config
    from edgekit.quant.evaluate import load_reference
    from edgekit.runtime.onnx_vision import OnnxVision

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--resolution", default="448x448")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--held", type=int, default=8, help="held-out images for 1 - cosine")
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
    calib, held = split_calibration(sample_images(["default"]), 16, args.held)
    quantize_int8(
        work / "fp32.onnx",
        work / "int8_qdq.onnx",
        patch_batches(calib, info, proc),
        method="percentile",
        float_parts=FLOAT_PARTS,
        gptq=True,
    )
    write_integer_graph(work / "int8_qdq.onnx", work / "int8_integer.onnx")
    ort_dynamic_int8(work / "fp32.onnx", work / "int8_ort_dynamic.onnx", FLOAT_PARTS)
    held_batches = patch_batches(held, info, proc)
    patches = held_batches[0]
    grid = np.asarray([[1, info.grid_h, info.grid_w]])
    model = load_reference(ckpt)
    pv, g = torch.from_numpy(patches), torch.from_numpy(grid)

    def eager():
        with torch.no_grad():
            model.model.get_image_features(pixel_values=pv, image_grid_thw=g)

    graphs = ("fp32", "fp16", "int8_qdq", "int8_integer", "int8_ort_dynamic")
    runtimes = {name: OnnxVision(work / f"{name}.onnx") for name in graphs}
    runs = {
        "pytorch_eager_fp32": eager,
        **{f"ort_{n}": (lambda rt=rt: rt.encode(patches, grid)) for n, rt in runtimes.items()},
    }
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(args.repeat):  # rounds alternate the graphs, so drift hits all of them alike
        for name, fn in runs.items():
            samples[name].append(timed(fn, 1))
    rows = {k: statistics.median(v) for k, v in samples.items()}
    reference = [runtimes["fp32"].encode(b, grid) for b in held_batches]
    error = {}
    for name in graphs[1:]:
        d = [
            1 - float((a * r).sum() / (np.linalg.norm(a) * np.linalg.norm(r)))
            for a, r in ((runtimes[name].encode(b, grid), r) for b, r in zip(held_batches, reference))
        ]
        error[f"ort_{name}"] = {"mean": float(np.mean(d)), "worst": float(np.max(d))}
    base, ort32 = rows["pytorch_eager_fp32"], rows["ort_fp32"]
    print(
        f"{args.preset}, {args.resolution}, {info.tokens} tokens, median of {args.repeat} alternated rounds; "
        f"1 - cosine to ORT FP32 on {len(held_batches)} held-out images"
    )
    for k, v in rows.items():
        e = error.get(k)
        acc = f"  1-cos {e['mean']:.1e} (worst {e['worst']:.1e})" if e else ""
        print(f"{k:>22}: {v * 1e3:8.1f} ms  ({base / v:.2f}x vs eager, {ort32 / v:.2f}x vs ORT FP32){acc}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": " ".join(sys.argv),
                    "preset": args.preset,
                    "resolution": args.resolution,
                    "tokens": info.tokens,
                    "seconds": rows,
                    "one_minus_cosine": error,
                    "speedup_vs_eager": {k: base / v for k, v in rows.items()},
                    "speedup_vs_ort_fp32": {k: ort32 / v for k, v in rows.items()},
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
