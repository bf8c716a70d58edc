"""Vision tower -> ONNX for one static resolution: FP32, FP16 (norms/rotary/softmax in FP32), INT8 QDQ.

Graph contract (all precisions): input `patches` float32 [N*gh*gw, patch_dim] exactly as the
processor makes it for N images resized to the planned size; output `embeddings` float32
[N*gh*gw/merge^2, out_hidden] in the processor's token order. The planned size, grid, image count
and precision are stored in the model's metadata_props (keys `edgekit.*`) for the runtime.

INT8 follows TensorRT's explicit-quantization rules: QuantizeLinear/DequantizeLinear pairs,
symmetric int8 activations (zero point 0, per tensor) and symmetric per-output-channel int8
weights. Only the weight MatMuls are quantized; attention's activation x activation MatMuls,
softmax, RMSNorm, rotary and (optionally) the patch merger stay float, because their ranges
are where int8 loses the most.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgekit.atomic import atomic_path
from edgekit.errors import EdgekitError

OPSET = 17
INPUT, OUTPUT = "patches", "embeddings"
PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATIONS = ("minmax", "percentile", "entropy")
FORBIDDEN_OPS = {"Loop", "If", "Scan"}


@dataclass(frozen=True)
class VisionGraphInfo:
    """What a runtime needs to feed the graph (stored in metadata_props)."""

    precision: str
    images: int
    height: int  # pixels every image is resized to
    width: int
    grid_h: int  # patches per image side
    grid_w: int
    merge: int
    patch_dim: int
    out_hidden: int

    @property
    def patches(self) -> int:
        return self.images * self.grid_h * self.grid_w

    @property
    def tokens(self) -> int:
        return self.patches // (self.merge * self.merge)

    def metadata(self) -> dict[str, str]:
        return {f"edgekit.{k}": str(v) for k, v in sorted(self.__dict__.items())}

    @classmethod
    def from_metadata(cls, props: dict[str, str], where: str) -> "VisionGraphInfo":
        try:
            return cls(precision=props["edgekit.precision"], **{
                k: int(props[f"edgekit.{k}"]) for k in
                ("images", "height", "width", "grid_h", "grid_w", "merge", "patch_dim", "out_hidden")})
        except (KeyError, ValueError) as e:
            raise EdgekitError(f"{where}: not an edgekit vision graph (metadata {e} missing or bad); "
                               "export it with `edgekit export-vision`") from None


def parse_resolution(text: str) -> tuple[int, int]:
    """'448x448' -> (width, height)."""
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) <= 0:
        raise EdgekitError(f"--resolution {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 448x448 or 1024x484")
    return int(parts[0]), int(parts[1])


# ---- FP32 / FP16 export ------------------------------------------------------------------------

def export_float(checkpoint, width: int, height: int, images: int, precision: str, out: str | Path) -> VisionGraphInfo:
    """Trace the static tower for one resolution and write an FP32 or FP16 ONNX graph atomically."""
    import onnx
    import torch

    from edgekit.export.vision_static import build_static_tower, plan_for_resolution

    if precision not in ("fp32", "fp16"):
        raise EdgekitError(f"--precision {precision!r}: export_float writes fp32 or fp16")
    plan, (h, w) = plan_for_resolution(checkpoint, width, height, images)
    v = checkpoint.vision
    info = VisionGraphInfo(precision, images, h, w, plan.grid_h, plan.grid_w, v.merge, v.patch_dim, v.out_hidden)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    tower = build_static_tower(checkpoint, plan, dtype=dtype)
    example = torch.zeros(plan.patches, v.patch_dim)  # [P, patch_dim]
    out = Path(out)
    with atomic_path(out) as tmp, torch.no_grad():
        torch.onnx.export(tower, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT], do_constant_folding=True)
        model = onnx.load(str(tmp))
        _set_metadata(model, info.metadata())
        onnx.save(model, str(tmp))
    return info


def _set_metadata(model, props: dict[str, str]) -> None:
    import onnx

    del model.metadata_props[:]
    for k, v in sorted(props.items()):
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    model.producer_name, model.producer_version = "edgekit", ""


def read_info(path: str | Path) -> VisionGraphInfo:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return VisionGraphInfo.from_metadata({p.key: p.value for p in model.metadata_props}, str(path))


def check_graph(path: str | Path) -> dict[str, int]:
    """onnx.checker with full (strict) shape inference; no control flow. Returns op-type counts."""
    import onnx

    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise EdgekitError(f"{path}: exported graph fails onnx.checker ({e})") from None
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    bad = FORBIDDEN_OPS & set(ops)
    if bad:
        raise EdgekitError(f"{path}: graph has data-dependent control flow ({sorted(bad)}); TensorRT needs a static graph")
    return ops


# ---- INT8 QDQ ------------------------------------------------------------------------------------

class PatchReader:
    """onnxruntime CalibrationDataReader over a list of patch arrays (one graph input each)."""

    def __init__(self, batches: Sequence[np.ndarray]):
        self._batches = list(batches)
        self._next = 0

    def get_next(self):
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return {INPUT: self._batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


def weight_matmuls(model) -> tuple[list[str], list[str]]:
    """Split MatMul/Gemm nodes into (weight products, activation x activation products) by their inputs."""
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    weights, acts = [], []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            (weights if any(i in consts for i in node.input) else acts).append(node.name)
    return weights, acts


# Parts that may stay in float in an INT8 graph. Measured on the small checkpoint (448x448, percentile,
# one part quantized at a time, 1 - cosine to FP32): patch embedding 2.8e-4, merger 3.2e-4, every
# block's qkv/proj/gate-up/down together 1.1e-4. The two ends carry most of the INT8 error for ~2% of
# the tower's MACs, so bundles keep both in float (FP16 under TensorRT).
FLOAT_PARTS = ("patch-embed", "merger")


def part_matmuls(model, part: str) -> list[str]:
    """A part's weight products: the patch embedding is the first, the merger's two layers the last two."""
    weights, _ = weight_matmuls(model)
    if part == "patch-embed":
        return weights[:1]
    if part == "merger":
        return weights[-2:]
    raise EdgekitError(f"--keep-float {part!r}: choose from {', '.join(FLOAT_PARTS)}")


def _gptq_round(q, float_model, batches) -> dict:
    """Re-choose the int8 weight codes of `q` by GPTQ with its scales fixed (vision_gptq.py), in place."""
    from onnx import numpy_helper

    from edgekit.export.vision_gptq import gptq_round

    weights = {i.name: numpy_helper.to_array(i) for i in float_model.graph.initializer if len(i.dims) == 2}
    return gptq_round(q, weights, batches, INPUT)


def quantize_int8(fp32_path: str | Path, out: str | Path, batches: Sequence[np.ndarray], *,
                  method: str = "minmax", percentile: float = 99.999, float_parts: Sequence[str] = (),
                  gptq: bool = False) -> dict:
    """Static INT8 QDQ of an FP32 vision graph, calibrated on `batches` of patches; writes `out` atomically."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATIONS:
        raise EdgekitError(f"--calibration {method!r}: choose one of {', '.join(CALIBRATIONS)}")
    if not batches:
        raise EdgekitError("INT8 calibration needs at least one image; pass --samples with images")
    model = onnx.load(str(fp32_path))
    weights, acts = weight_matmuls(model)
    if not weights:  # fail before calibrating: a config that matches nothing would export float silently
        raise EdgekitError(f"{fp32_path}: no weight MatMul found to quantize; is this an edgekit vision graph?")
    exclude = acts + [n for part in float_parts for n in part_matmuls(model, part)]
    quantized = [n for n in weights if n not in exclude]
    extra = {
        "ActivationSymmetric": True,  # TensorRT: int8 activations with zero point 0
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT takes float biases; int32 bias QDQ is an ORT-only pattern
        "CalibTensorRangeSymmetric": method != "minmax",
        "CalibPercentile": percentile,
        "CalibNumBins": 2048,
    }
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    out = Path(out)
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs advice on the root logger
    with atomic_path(out) as tmp, contextlib.redirect_stdout(io.StringIO()):  # its calibrators print progress
        quantize_static(str(fp32_path), str(tmp), PatchReader(batches), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=quantized, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=calib, extra_options=extra)
        q = onnx.load(str(tmp))
        rounded = _gptq_round(q, model, batches) if gptq else {}
        props = {p.key: p.value for p in model.metadata_props}
        props["edgekit.precision"] = "int8"
        props["edgekit.calibration"] = method
        _set_metadata(q, props)
        onnx.save(q, str(tmp))
    return {"quantized_matmuls": len(quantized), "float_matmuls": len(exclude), "float_parts": list(float_parts),
            "method": method, **rounded,
            "calibration_batches": len(batches)}


# ---- calibration images ------------------------------------------------------------------------

def sample_images(sources: Iterable[str | Path]) -> list[tuple[Path, str | None]]:
    """(image file, split) from sample sets: a JSONL file, a folder of *.jsonl, an image folder, or a built-in name.

    `split` is the line's "calib" / "eval" field (None where absent). Driving lines with several
    cameras contribute every camera.
    """
    sources = list(sources)
    items: list[tuple[Path, str | None]] = []
    for src in sources:
        p = Path(src)
        if p.is_file() and p.suffix == ".jsonl":
            items += _jsonl_images(p)
        elif p.is_dir() and sorted(p.glob("*.jsonl")):
            for f in sorted(p.glob("*.jsonl")):
                items += _jsonl_images(f)
        elif p.is_dir():
            items += [(q, None) for q in sorted(p.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES]
        else:
            items += _builtin_images(str(src))
    seen: set[Path] = set()
    unique = [(q, sp) for q, sp in items if not (q in seen or seen.add(q))]
    if not unique:
        raise EdgekitError(f"--samples {', '.join(map(str, sources))}: no images found")
    return unique


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def _jsonl_images(path: Path) -> list[tuple[Path, str | None]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise EdgekitError(f"{path}:{n}: not valid JSON ({e})") from None
        names = rec.get("images") or ([rec["image"]] if rec.get("image") else [])
        out += [(path.parent / name, rec.get("split")) for name in names]
    return out


def _builtin_images(name: str) -> list[tuple[Path, str | None]]:
    try:
        from edgekit.data.samples import load_samples  # the built-in synthetic sets
    except ImportError:
        raise EdgekitError(f"--samples {name!r}: not a file or folder, and the built-in sample sets are not "
                           "available in this install; pass a JSONL file or an image folder") from None
    out = []
    for s in load_samples(name):
        imgs = getattr(s, "images", None) or [getattr(s, "image")]
        out += [(Path(i), getattr(s, "split", None)) for i in imgs]
    return out


def split_calibration(items: Sequence[tuple[Path, str | None]], calib_max: int, eval_max: int
                      ) -> tuple[list[Path], list[Path]]:
    """(calibration images, held-out images): by each line's split; unlabelled images hold out every 4th.

    At most calib_max / eval_max, picked evenly across the list so every source is represented.
    """
    calib = [p for p, sp in items if sp == "calib"]
    held = [p for p, sp in items if sp == "eval"]
    rest = [p for p, sp in items if sp not in ("calib", "eval")]
    calib += [p for i, p in enumerate(rest) if i % 4 != 3]
    held += [p for i, p in enumerate(rest) if i % 4 == 3]
    return _evenly(calib, calib_max), _evenly(held, eval_max)


def _evenly(items: list, k: int) -> list:
    if len(items) <= k:
        return list(items)
    return [items[int(i * len(items) / k)] for i in range(k)]


def patch_batches(images: Sequence, info: VisionGraphInfo, processor_cfg) -> list[np.ndarray]:
    """Images (paths, PIL images or uint8 arrays) -> graph inputs, `info.images` images per batch.

    A trailing group smaller than the graph's image count is filled by repeating its images.
    """
    from edgekit.data.images import load_image
    from edgekit.model.processor import preprocess_image

    if not images:
        return []
    rows = []
    for im in images:
        pil = load_image(im) if isinstance(im, (str, Path)) else im
        patches, _ = preprocess_image(pil, processor_cfg, resize_to=(info.height, info.width))
        rows.append(patches)  # [gh*gw, patch_dim]
    batches = []
    for start in range(0, len(rows), info.images):
        group = rows[start:start + info.images]
        group += [group[i % len(group)] for i in range(info.images - len(group))]
        batches.append(np.concatenate(group, axis=0))  # [N*gh*gw, patch_dim]
    return batches


def output_path(out: str | Path, width: int, height: int, several: bool) -> Path:
    """`out` itself for one resolution; `<stem>.<W>x<H>.onnx` beside it for several."""
    out = Path(out)
    return out.with_name(f"{out.stem}.{width}x{height}{out.suffix or '.onnx'}") if several else out


# ---- fidelity ----------------------------------------------------------------------------------

def image_cosines(out: np.ndarray, ref: np.ndarray, images: int) -> np.ndarray:
    """Cosine similarity per image between two [images*tokens, hidden] embeddings (float64) -> [images]."""
    a = out.reshape(images, -1).astype(np.float64)
    b = ref.reshape(images, -1).astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def relative_max_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref|."""
    return float(np.abs(out.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


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


def export_vision(model_dir: str | Path, out: str | Path, cfg: VisionExportConfig, on_step=None) -> list[dict]:
    """Export one graph per resolution, check it, measure it against FP32; returns one report per graph.

    Each report is also written beside its graph as `<graph>.json` (deterministic, no timings).
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
            report: dict = {"checkpoint": str(ckpt.path), "resolution": f"{width}x{height}",
                            "resized_to": f"{info.width}x{info.height}", "images": cfg.images,
                            "precision": cfg.precision, "tokens": info.tokens, "graph": path.name}
            if cfg.precision == "fp16":
                step(f"{width}x{height}: export fp16")
                export_float(ckpt, width, height, cfg.images, "fp16", path)
            held = patch_batches(held_paths, info, proc)
            if cfg.precision == "int8":
                step(f"{width}x{height}: calibrate int8 ({cfg.calibration}, {len(calib_paths)} images)")
                report["quantization"] = quantize_int8(fp32, path, patch_batches(calib_paths, info, proc),
                                                       method=cfg.calibration, float_parts=cfg.float_parts,
                                                       gptq=cfg.gptq)
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


def _fp32_parity(ckpt, fp32_path: Path, info: VisionGraphInfo) -> dict:
    """The FP32 graph against the torch module it was traced from, on seeded random patches."""
    import torch

    from edgekit.export.vision_static import build_static_tower, plan_for_resolution
    from edgekit.runtime.onnx_vision import OnnxVision

    plan, _ = plan_for_resolution(ckpt, info.width, info.height, info.images)
    x = _random_batch(info, seed=1)
    with torch.no_grad():
        ref = build_static_tower(ckpt, plan)(torch.from_numpy(x)).numpy()
    out = OnnxVision(fp32_path).session.run(None, {INPUT: x})[0]
    return {"max_rel_error": relative_max_error(out, ref),
            "min_cosine": float(image_cosines(out, ref, info.images).min())}


def _fidelity(path: Path, fp32_path: Path, batches: Sequence[np.ndarray], info: VisionGraphInfo) -> dict:
    """Per-image cosine of `path`'s embeddings to the FP32 graph's, over every batch."""
    from edgekit.runtime.onnx_vision import OnnxVision

    low, ref = OnnxVision(path).session, OnnxVision(fp32_path).session
    cos, err = [], 0.0
    for x in batches:
        a, b = low.run(None, {INPUT: x})[0], ref.run(None, {INPUT: x})[0]
        cos += image_cosines(a, b, info.images).tolist()
        err = max(err, relative_max_error(a, b))
    return {"samples": len(cos), "mean_cosine": float(np.mean(cos)), "min_cosine": float(np.min(cos)),
            "max_rel_error": err, "per_sample_cosine": [round(c, 6) for c in cos]}
