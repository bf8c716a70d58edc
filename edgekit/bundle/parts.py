"""The artifacts behind each bundle part, one function per part: the vision ONNX at the build's resolution, the
unified (or FP16) checkpoint for TensorRT with Edge-LLM's decoder ONNX, and the exporter identity in the stage key."""

from __future__ import annotations

from pathlib import Path


# INT8 vision, as measured best on the e2e agreement test (tests/bundle/test_int8_vision_e2e.py): percentile
# ranges, GPTQ-rounded weights, patch embedding and merger in float.
VISION_CALIBRATION = "percentile"
VISION_CALIB_IMAGES = 16


def vision_part(
    ck,
    out: Path,
    resolution: tuple[int, int],
    images: int,
    precision: str,
    samples: str,
    work: Path,
    integer_kernels: bool = False,
) -> dict:
    """The vision tower as ONNX at one resolution; INT8 is calibrated on the samples' calib split, as a QDQ graph
    (TensorRT) or, with `integer_kernels` (CPU targets), that graph on ONNX Runtime's integer MatMuls."""
    from edgekit.export.calibration_images import patch_batches
    from edgekit.export.vision_int8 import FLOAT_PARTS, quantize_int8
    from edgekit.export.vision_onnx import export_float
    from edgekit.model.processor import load_processor_config

    width, height = resolution
    if precision == "fp16":  # blocks whose activations would not fit FP16 stay FP32 (edgekit.export.vision_fp16_guard)
        from edgekit.export.vision_onnx import fp16_guard

        guard = fp16_guard(ck, width, height, images, vision_calibration_images(samples))
        export_float(ck, width, height, images, precision, out, guard["fp32_blocks"])
        return {"precision": precision, "fp16_guard": guard}
    if precision == "fp32":
        export_float(ck, width, height, images, precision, out)
        return {"precision": precision}
    fp32 = work / "vision_fp32.onnx"
    info = export_float(ck, width, height, images, "fp32", fp32)
    calib = vision_calibration_images(samples)
    batches = patch_batches(calib, info, load_processor_config(ck.path))
    qdq = work / "vision_qdq.onnx" if integer_kernels else out
    report = quantize_int8(fp32, qdq, batches, method=VISION_CALIBRATION, float_parts=FLOAT_PARTS, gptq=True)
    fp32.unlink(missing_ok=True)
    fp32.with_name(fp32.name + ".data").unlink(missing_ok=True)  # its weights, when over 2 GB
    if integer_kernels:
        from edgekit.export.vision_int8_cpu import write_integer_graph

        report |= write_integer_graph(qdq, out)
        qdq.unlink()
    return report


def vision_calibration_images(samples: str) -> list[Path]:
    """VISION_CALIB_IMAGES calibration images; the default mix takes them in equal numbers from the real samples
    (when present) and the built-in ones, so that the built-in set's few images are not drowned by the real set's
    hundreds (an even pick over all of them would be nearly all real)."""
    from edgekit.export.calibration_images import sample_images, split_calibration
    from edgekit.data.calibration_mix import DEFAULT_SPEC, real_samples_files
    from edgekit.data.samples import BUILTIN_SETS

    if samples != DEFAULT_SPEC:
        return split_calibration(sample_images(samples.split(",")), VISION_CALIB_IMAGES, 0)[0]
    real = real_samples_files()
    groups = [[str(f) for f in real], list(BUILTIN_SETS)] if real else [list(BUILTIN_SETS)]
    share = -(-VISION_CALIB_IMAGES // len(groups))
    picked = [p for g in groups for p in split_calibration(sample_images(g), share, 0)[0]]
    return picked[:VISION_CALIB_IMAGES]


def tensorrt_decoder(ck, bundle: Path, qcfg, calib_dir: Path, work: Path, on_layer=None, device="cpu") -> list[str]:
    """decoder/unified (ModelOpt unified checkpoint, or the FP16 checkpoint) + Edge-LLM's ONNX when installed."""
    from edgekit.atomic import write_json
    from edgekit.bundle.edgellm import check_export, find_exporter, run_export

    unified = bundle / "decoder" / "unified"
    if qcfg is None:
        copy_checkpoint(ck, unified)
    else:
        from edgekit.export.modelopt_unified import write_unified_checkpoint
        from edgekit.quant.calibrate import calibrate

        calibrated = calibrate(ck.path, qcfg, calib_dir, on_layer=on_layer, device=device, data_free_rtn=True)
        write_unified_checkpoint(ck.path, unified, calibrated)
        write_json(bundle / "decoder" / "calibration.json", calibrated.record)
    exporter = find_exporter()
    if exporter is not None:
        onnx_dir = bundle / "decoder" / "edgellm_onnx"
        tmp = work / "edgellm_onnx"
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        onnx_path = run_export(exporter, unified, tmp, work / "edgellm_export.log")
        if qcfg is not None:  # a silent FP16 fallback fails the build here
            check_export(onnx_path, unified)
        shutil.rmtree(onnx_dir, ignore_errors=True)
        tmp.rename(onnx_dir)  # the whole directory appears at once
    return [str(p.relative_to(bundle)) for p in sorted((bundle / "decoder").rglob("*")) if p.is_file()]


def copy_checkpoint(ck, out: Path) -> None:
    from edgekit.atomic import write_bytes
    from edgekit.export.modelopt_unified import EXTRA_FILES

    for f in [ck.path / "config.json", *ck.weight_files(), *(ck.path / n for n in EXTRA_FILES)]:
        if f.is_file() and f.suffix != ".bin":
            write_bytes(out / f.name, f.read_bytes())  # whole shards: an FP16 build is a copy, once
    if (ck.path / "model.safetensors.index.json").is_file():
        write_bytes(out / "model.safetensors.index.json", (ck.path / "model.safetensors.index.json").read_bytes())


def edgellm_identity() -> str | None:
    """Which exporter (if any) shapes decoder/edgellm_onnx: part of the decoder stage's cache key."""
    from edgekit.bundle.edgellm import find_exporter

    exe = find_exporter()
    if exe is None:
        return None
    from importlib.metadata import PathDistribution

    for dist in exe.resolve().parent.parent.glob("lib/python*/site-packages/tensorrt_edgellm-*.dist-info"):
        return f"tensorrt-edgellm {PathDistribution(dist).version}"
    return "tensorrt-edgellm (version unknown)"
