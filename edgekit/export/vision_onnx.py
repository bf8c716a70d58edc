"""Vision tower -> ONNX for one static resolution (FP32, FP16 with norms/rotary/softmax in FP32, INT8 QDQ),
checked by onnx.checker and measured against the torch tower and the FP32 graph.

The graph contract (input/output names, shapes, metadata) is edgekit.model.vision_graph; INT8 is
vision_int8.py; the calibration images come from edgekit.export.calibration_images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.export.calibration_images import patch_batches, sample_images, split_calibration
from edgekit.export.vision_int8 import CALIBRATIONS, FLOAT_PARTS, quantize_int8
from edgekit.interrupts import native_section
from edgekit.metrics import image_cosines, relative_max_error
from edgekit.model.vision_graph import FP32_BLOCKS_KEY, INPUT, OUTPUT, VisionGraphInfo, set_metadata
from edgekit.ort_session import load_session, session_options

OPSET = 17
PRECISIONS = ("fp32", "fp16", "int8")
FORBIDDEN_OPS = {"Loop", "If", "Scan"}


# ---- FP32 / FP16 export ------------------------------------------------------------------------


def graph_plan(checkpoint, width: int, height: int, images: int, precision: str):
    """(window plan, VisionGraphInfo) of the graph for N images of width x height pixels."""
    from edgekit.export.vision_static import plan_for_resolution

    plan, (h, w) = plan_for_resolution(checkpoint, width, height, images)
    v = checkpoint.vision
    return plan, VisionGraphInfo(precision, images, h, w, plan.grid_h, plan.grid_w, v.merge, v.patch_dim, v.out_hidden)


def fp16_guard(checkpoint, width: int, height: int, images: int, image_paths: Sequence) -> dict:
    """The blocks an FP16 graph must keep in FP32, measured on up to GUARD_IMAGES calibration images (random patches
    when there are none): edgekit.export.vision_fp16_guard. Returns its report (fp32_blocks, block_peaks)."""
    from edgekit.export.vision_fp16_guard import GUARD_IMAGES, block_peaks, blocks_to_keep_fp32, guard_report
    from edgekit.model.processor import load_processor_config

    plan, info = graph_plan(checkpoint, width, height, images, "fp32")
    batches = patch_batches(list(image_paths)[:GUARD_IMAGES], info, load_processor_config(checkpoint.path))
    peaks = block_peaks(checkpoint, plan, batches or [_random_batch(info)])
    return guard_report(peaks, blocks_to_keep_fp32(peaks))


def export_float(
    checkpoint, width: int, height: int, images: int, precision: str, out: str | Path, fp32_blocks: Sequence[int] = ()
) -> VisionGraphInfo:
    """Trace the static tower for one resolution and write an FP32 or FP16 ONNX graph atomically (its weights in one
    `<out>.data` file beside it when they are too large for one protobuf: edgekit.export.onnx_files). fp32_blocks: the
    blocks an FP16 graph keeps in FP32 (fp16_guard), recorded in its metadata."""
    import tempfile

    import onnx
    import torch

    from edgekit.export.onnx_files import save_graph
    from edgekit.export.vision_static import build_static_tower

    if precision not in ("fp32", "fp16"):
        raise EdgekitError(f"--precision {precision!r}: export_float writes fp32 or fp16")
    plan, info = graph_plan(checkpoint, width, height, images, precision)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    kept = sorted(fp32_blocks) if precision == "fp16" else []
    tower = build_static_tower(checkpoint, plan, dtype=dtype, fp32_blocks=kept)
    example = torch.zeros(plan.patches, checkpoint.vision.patch_dim)  # [P, patch_dim]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Traced into a private folder: above 2 GB the exporter spills one file per weight there, never beside `out`.
    # The tracer runs forward() from C++: a SIGTERM must not unwind through it (edgekit.interrupts).
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".trace-") as tmp, torch.no_grad(), native_section():
        traced = Path(tmp) / "traced.onnx"
        torch.onnx.export(
            tower,
            (example,),
            str(traced),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=[OUTPUT],
            do_constant_folding=True,
        )
        del tower
        model = onnx.load(str(traced))  # with whatever external files the exporter wrote
        set_metadata(model, {**info.metadata(), **({FP32_BLOCKS_KEY: ",".join(map(str, kept))} if kept else {})})
        save_graph(model, out)
    return info


def check_graph(path: str | Path) -> dict[str, int]:
    """onnx.checker with full (strict) shape inference; no control flow. Returns op-type counts."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # the graph; the checker reads the weights by path
    try:
        onnx.checker.check_model(str(path), full_check=True)  # the path form: graphs over 2 GB, external data
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise EdgekitError(f"{path}: exported graph fails onnx.checker ({e})") from None
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    bad = FORBIDDEN_OPS & set(ops)
    if bad:
        raise EdgekitError(
            f"{path}: graph has data-dependent control flow ({sorted(bad)}); TensorRT needs a static graph"
        )
    return ops


def output_path(out: str | Path, width: int, height: int, several: bool) -> Path:
    """`out` itself for one resolution; `<stem>.<W>x<H>.onnx` beside it for several."""
    out = Path(out)
    return out.with_name(f"{out.stem}.{width}x{height}{out.suffix or '.onnx'}") if several else out


# ---- the whole export ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VisionExportConfig:
    """One `edgekit export-vision` run (the CLI maps 1:1 onto these fields)."""

    resolutions: tuple[tuple[int, int], ...]  # (width, height) in pixels, before the processor's resize
    images: int = 1
    precision: str = "fp16"
    calibration: str = "minmax"
    samples: tuple[str, ...] = ("driving", "embodied")
    calib_images: int = 32
    eval_images: int = 16
    float_parts: tuple[str, ...] = FLOAT_PARTS
    gptq: bool = True
    version: int = 1


REPORT_SCHEMA = "edgekit.vision-export/1"


def export_vision(
    model_dir: str | Path, out: str | Path, cfg: VisionExportConfig, on_step=None, *, force: bool = False
) -> list[dict]:
    """Export one graph per resolution, check it, measure it against FP32; returns one report per graph.

    Each report is also written beside its graph as `<graph>.json` (deterministic, no timings). An output over an
    input is refused, and over an existing file edgekit did not write unless `force`.
    """
    import tempfile

    from edgekit.atomic import write_json
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.processor import load_processor_config

    if cfg.precision not in PRECISIONS:
        raise EdgekitError(f"--precision {cfg.precision!r}: choose one of {', '.join(PRECISIONS)}")
    if cfg.precision == "int8" and cfg.calibration not in CALIBRATIONS:
        raise EdgekitError(f"--calibration {cfg.calibration!r}: choose one of {', '.join(CALIBRATIONS)}")
    if not cfg.resolutions:
        raise EdgekitError("give at least one --resolution WIDTHxHEIGHT")
    from edgekit.outputs import claim_file, is_edgekit_onnx, is_json_with_schema, spec_paths

    inputs = [Path(model_dir), *spec_paths(cfg.samples)]
    for width, height in cfg.resolutions:
        path = output_path(out, width, height, len(cfg.resolutions) > 1)
        claim_file(path, inputs, force=force, ours=is_edgekit_onnx)
        claim_file(
            path.with_name(path.name + ".data"),
            inputs,
            force=force,  # the weights of a graph over 2 GB
            ours=lambda data, graph=path: graph.exists() and is_edgekit_onnx(graph),
        )
        claim_file(path.with_suffix(".json"), inputs, force=force, ours=is_json_with_schema(REPORT_SCHEMA))
    step = on_step or (lambda msg: None)
    ckpt = open_checkpoint(model_dir)
    proc = load_processor_config(ckpt.path)
    calib_paths, held_paths = _resolve_samples(cfg)
    reports = []
    several = len(cfg.resolutions) > 1
    for width, height in cfg.resolutions:
        path = output_path(out, width, height, several)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-vision-") as tmp:
            fp32 = path if cfg.precision == "fp32" else Path(tmp) / "fp32.onnx"
            step(f"{width}x{height}: export fp32")
            info = export_float(ckpt, width, height, cfg.images, "fp32", fp32)
            report: dict = {
                "schema": REPORT_SCHEMA,
                "checkpoint": str(ckpt.path),
                "resolution": f"{width}x{height}",
                "resized_to": f"{info.width}x{info.height}",
                "images": cfg.images,
                "precision": cfg.precision,
                "tokens": info.tokens,
                "graph": path.name,
            }
            if cfg.precision == "fp16":
                step(f"{width}x{height}: FP16 range of every block on the calibration images")
                report["fp16_guard"] = fp16_guard(ckpt, width, height, cfg.images, calib_paths)
                step(f"{width}x{height}: export fp16")
                export_float(ckpt, width, height, cfg.images, "fp16", path, report["fp16_guard"]["fp32_blocks"])
            held = patch_batches(held_paths, info, proc)
            if cfg.precision == "int8":
                step(f"{width}x{height}: calibrate int8 ({cfg.calibration}, {len(calib_paths)} images)")
                report["quantization"] = quantize_int8(
                    fp32,
                    path,
                    patch_batches(calib_paths, info, proc),
                    method=cfg.calibration,
                    float_parts=cfg.float_parts,
                    gptq=cfg.gptq,
                )
            step(f"{width}x{height}: check graph and measure")
            report["ops"] = check_graph(path)
            report["fp32_vs_torch"] = _fp32_parity(ckpt, fp32, info)
            if cfg.precision != "fp32":
                report["vs_fp32"] = _fidelity(path, fp32, held or [_random_batch(info)], info)
                report["vs_fp32"]["inputs"] = "held-out sample images" if held else "random patches"
        write_json(path.with_suffix(".json"), report)
        reports.append(report)
    ckpt.close()
    return reports


def _resolve_samples(cfg: VisionExportConfig) -> tuple[list[Path], list[Path]]:
    """Calibration and held-out images; for fp32/fp16 missing samples only mean random test inputs."""
    try:
        items = sample_images(cfg.samples)
    except EdgekitError:
        if cfg.precision == "int8":
            raise
        return [], []
    calib, held = split_calibration(items, cfg.calib_images, cfg.eval_images)
    if cfg.precision == "int8" and not calib:
        raise EdgekitError(f"--samples {', '.join(cfg.samples)}: no calibration images (split 'calib' or unlabelled)")
    return calib, held


def _random_batch(info: VisionGraphInfo, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((info.patches, info.patch_dim), dtype=np.float32)  # [P, patch_dim]


def _session(path: Path):
    return load_session(path, session_options(), path)


def _fp32_parity(ckpt, fp32_path: Path, info: VisionGraphInfo) -> dict:
    """The FP32 graph against the torch module it was traced from, on seeded random patches."""
    import torch

    from edgekit.export.vision_static import build_static_tower, plan_for_resolution

    plan, _ = plan_for_resolution(ckpt, info.width, info.height, info.images)
    x = _random_batch(info, seed=1)
    with torch.no_grad():
        ref = build_static_tower(ckpt, plan)(torch.from_numpy(x)).numpy()
    out = _session(fp32_path).run(None, {INPUT: x})[0]
    return {
        "max_rel_error": relative_max_error(out, ref),
        "min_cosine": float(image_cosines(out, ref, info.images).min()),
    }


def _fidelity(path: Path, fp32_path: Path, batches: Sequence[np.ndarray], info: VisionGraphInfo) -> dict:
    """Per-image cosine of `path`'s embeddings to the FP32 graph's, over every batch."""
    low, ref = _session(path), _session(fp32_path)
    cos, err = [], 0.0
    for x in batches:
        a, b = low.run(None, {INPUT: x})[0], ref.run(None, {INPUT: x})[0]
        cos += image_cosines(a, b, info.images).tolist()
        err = max(err, relative_max_error(a, b))
    return {
        "samples": len(cos),
        "mean_cosine": float(np.mean(cos)),
        "min_cosine": float(np.min(cos)),
        "max_rel_error": err,
        "per_sample_cosine": [round(c, 6) for c in cos],
    }
