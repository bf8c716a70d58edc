"""`edgekit build`: one checkpoint + one target -> a verified, reproducible bundle.

Stages (each cached by a content key, see stages.py, so a rerun after a failure or a kill resumes):
  plan       memory fit and roofline; refuses a build that cannot fit (no files)
  tokenizer  config, tokenizer, chat template and processor settings -> tokenizer/
  vision     the vision tower as static-shape ONNX at the target's camera resolution -> vision/
  decoder    gguf backend: decoder GGUF (+ mmproj GGUF); tensorrt backend: ModelOpt unified
             checkpoint (+ Edge-LLM's decoder ONNX when its exporter is installed) -> decoder/
  engines    build-engines.sh for the device
  manifest   edgekit.json, written last: a bundle without it never verifies
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError

CONFIG_VERSION = 1
TOKENIZER_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json",
                   "tokenizer_config.json", "chat_template.jinja")
GGUF_TYPE = {"fp32": "f32", "fp16": "f16", "int8": "q8_0", "w8a8": "q8_0", "int4": "q4_k"}
METHODS = ("rtn", "gptq", "awq", "smoothquant")
BACKENDS = ("tensorrt", "gguf")
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k")
GROUP_SIZES = (32, 64, 128)
MAX_CONTEXT, MAX_IMAGES, MAX_SIDE = 1 << 20, 16, 16384


@dataclass(frozen=True)
class BuildConfig:
    target: str
    precision: str = "int4"
    method: str = "rtn"
    backend: str | None = None  # None: the target's first backend
    samples: str = "driving,embodied"
    calib_n: int = 64
    group_size: int = 128
    context: int = 4096
    images: int = 1
    resolution: tuple[int, int] | None = None  # (width, height); None: the target's camera
    vision_precision: str | None = None  # None: from the build precision (plan.vision_precision_for)
    gguf_type: str | None = None  # override the GGUF type for the decoder (e.g. q4_0)
    seed: int = 0
    version: int = CONFIG_VERSION

    def as_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Every option's type and range, before the first stage runs (one line naming the option)."""
        def whole(name: str, value, lo: int, hi: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise EdgekitError(f"--{name.replace('_', '-')} {value!r}: must be a whole number from {lo} to {hi}")

        if self.precision not in GGUF_TYPE:
            raise EdgekitError(f"--precision {self.precision!r}: choose one of {', '.join(GGUF_TYPE)}")
        if self.method not in METHODS:
            raise EdgekitError(f"--method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise EdgekitError(f"--backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.gguf_type is not None and self.gguf_type not in GGUF_TYPES:
            raise EdgekitError(f"--gguf-type {self.gguf_type!r}: choose one of {', '.join(GGUF_TYPES)}")
        if self.group_size not in GROUP_SIZES:
            raise EdgekitError(f"--group-size {self.group_size!r}: choose one of {', '.join(map(str, GROUP_SIZES))}")
        whole("context", self.context, 1, MAX_CONTEXT)
        whole("images", self.images, 1, MAX_IMAGES)
        whole("calib_n", self.calib_n, 1, 1 << 16)
        whole("seed", self.seed, 0, 2**32 - 1)
        if self.resolution is not None:
            w, h = self.resolution
            whole("resolution width", w, 1, MAX_SIDE)
            whole("resolution height", h, 1, MAX_SIDE)


def _copy_tokenizer(source: Path, bundle: Path) -> list[str]:
    from edgekit.atomic import write_bytes

    out = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            write_bytes(bundle / "tokenizer" / name, (source / name).read_bytes())
            out.append(f"tokenizer/{name}")
    return out


def _needs_samples(config: BuildConfig, vision_precision: str) -> bool:
    """Calibration reads the samples: a calibrated decoder, W8A8 activation scales, or INT8 vision."""
    return config.method != "rtn" or config.precision == "w8a8" or vision_precision == "int8"


def build_bundle(model: str | Path, out: str | Path, config: BuildConfig,
                 on_stage: Callable[[str, str], None] | None = None, *, allow_nonfinite: bool = False) -> Path:
    """Build (or resume building) a bundle for `config.target` from checkpoint `model` into `out`."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.plan import make_plan, refuse_if_unfit
    from edgekit.stages import StageRunner, claim_out
    from edgekit.targets import get_target

    model, out = Path(model), Path(out)
    config.validate()
    claim_out(out)  # absent, empty or an edgekit bundle: refused before any work otherwise
    target = get_target(config.target)
    backend = config.backend or target.default_backend()
    if backend not in target.backends:
        raise EdgekitError(f"target {target.name} has no {backend!r} backend; it supports {', '.join(target.backends)}")
    ck = open_checkpoint(model, allow_nonfinite=allow_nonfinite)
    if config.context > ck.text.max_position:
        raise EdgekitError(f"--context {config.context}: the model's max_position_embeddings is {ck.text.max_position}")
    if config.resolution is not None and min(config.resolution) < ck.vision.patch * ck.vision.merge:
        raise EdgekitError(f"--resolution {config.resolution[0]}x{config.resolution[1]}: each side must be at least "
                           f"{ck.vision.patch * ck.vision.merge} px (one merged patch)")
    shapes = {n: i.shape for n, i in ck.tensors.items()}
    # Fail before spending time: the plan refuses what cannot fit or is unsupported.
    plan = make_plan(ck.text, ck.vision, shapes, target, config.precision, config.context, config.images, config.resolution)
    refuse_if_unfit(plan)
    if backend == "tensorrt":  # fail before spending time
        unified_quant_config(config)
    if _needs_samples(config, config.vision_precision or plan.vision_precision):
        from edgekit.data.samples import load_samples

        load_samples(config.samples.split(","))  # a missing file or a malformed line fails here, not in a stage

    runner = StageRunner(out, on_stage)
    try:
        return _run_stages(runner, ck, config, target, backend, plan)
    finally:
        runner.close()
        ck.close()


def _run_stages(runner, ck, config: BuildConfig, target, backend: str, plan) -> Path:
    from edgekit.atomic import write_json, write_text
    from edgekit.bundle import MANIFEST, SCHEMA, artifact_table, seal_manifest, tool_versions, verify_bundle

    vision_precision = config.vision_precision or plan.vision_precision
    resolution = tuple(plan.resolution)
    source_key = ck.content_hash
    base = {"source": source_key, "config": config.as_dict(), "backend": backend, "target": target.name}

    k_tok = runner.run("tokenizer", {"source": source_key}, lambda b: _copy_tokenizer(ck.path, b))

    def vision_stage(bundle: Path) -> list[str]:
        export_vision(ck, bundle / "vision" / "vision.onnx", resolution, config.images, vision_precision,
                      config.samples, runner.work)
        return ["vision/vision.onnx"]

    k_vis = runner.run("vision", {**base, "vision_precision": vision_precision, "resolution": resolution}, vision_stage)

    calib_dir = runner.work / "calib"
    decoder_parts: dict[str, dict] = {}
    if backend == "gguf":
        gguf_type = config.gguf_type or GGUF_TYPE[config.precision]

        def decoder_stage(bundle: Path) -> list[str]:
            from edgekit.export.gguf import write_decoder_gguf
            from edgekit.export.mmproj import write_mmproj_gguf

            calibrated, outputs = None, ["decoder/decoder.gguf", "decoder/mmproj.gguf"]
            if config.method != "rtn" and gguf_type not in ("f32", "f16", "bf16"):
                from edgekit.quant.calibrate import QuantConfig, calibrate

                qcfg = QuantConfig(method=config.method, grid=f"gguf:{gguf_type}", samples=config.samples,
                                   n_samples=config.calib_n, seed=config.seed)
                calibrated = calibrate(ck.path, qcfg, calib_dir)
                write_json(bundle / "decoder" / "calibration.json", calibrated.record)
                outputs.append("decoder/calibration.json")
            write_decoder_gguf(ck.path, bundle / "decoder" / "decoder.gguf", gguf_type, calibrated=calibrated)
            write_mmproj_gguf(ck.path, bundle / "decoder" / "mmproj.gguf", "f16")
            return outputs

        k_dec = runner.run("decoder", {**base, "gguf_type": gguf_type}, decoder_stage)
        decoder_parts["decoder"] = {"format": "gguf", "path": "decoder/decoder.gguf", "precision": gguf_type,
                                    "method": config.method if gguf_type not in ("f32", "f16", "bf16") else "none"}
        decoder_parts["mmproj"] = {"format": "mmproj-gguf", "path": "decoder/mmproj.gguf", "precision": "f16"}

    if backend == "tensorrt":
        qcfg = unified_quant_config(config)

        def decoder_stage(bundle: Path) -> list[str]:
            return _tensorrt_decoder(ck, bundle, qcfg, calib_dir, runner.work)

        k_dec = runner.run("decoder", {**base, "unified": qcfg.key() if qcfg else None,
                                       "edgellm": _edgellm_identity()}, decoder_stage)
        unified = runner.bundle / "decoder" / "unified"
        decoder_parts["decoder"] = {"format": "modelopt-unified" if qcfg else "hf-checkpoint", "path": "decoder/unified",
                                    "precision": config.precision, "method": qcfg.method if qcfg else "none",
                                    **_quant_algo(unified)}
        if (runner.bundle / "decoder" / "edgellm_onnx").is_dir():
            decoder_parts["decoder_onnx"] = {"format": "edgellm-onnx-dir", "path": "decoder/edgellm_onnx",
                                             "exporter": f"tensorrt-edgellm-export --skip-visual ({_edgellm_identity()})"}

    def engines_stage(bundle: Path) -> list[str]:
        from edgekit.engines_script import engines_script

        write_text(bundle / "build-engines.sh", engines_script(target, backend, config, plan))
        (bundle / "build-engines.sh").chmod(0o755)
        return ["build-engines.sh"]

    runner.run("engines", {**base, "decoder": k_dec, "vision": k_vis}, engines_stage)

    # The manifest is written last, over the final file set.
    runner.prune_unclaimed()
    ids = ck.token_ids
    manifest = {
        "schema": SCHEMA,
        "target": {"name": target.name, "gpu_arch": target.gpu_arch, "backend": backend},
        "build": config.as_dict(),
        "source": {"content_hash": source_key, "files": ck.file_hashes()},
        "model": {"text": ck.text.as_dict(), "vision": ck.vision.as_dict(), "mrope_section": list(ck.text.mrope_section),
                  "token_ids": {"image": ids.image, "video": ids.video, "vision_start": ids.vision_start,
                                "vision_end": ids.vision_end, "bos": ids.bos, "eos": ids.eos},
                  "special_tokens": dict(sorted(ck.special_tokens.items()))},
        "preprocessing": {"resolution": list(resolution), "images": config.images, **ck.preprocessor_config},
        "context": config.context,
        "tokenizer_dir": "tokenizer",
        "parts": {"vision": {"format": "onnx", "path": "vision/vision.onnx", "precision": vision_precision,
                             "resolution": list(resolution), "images": config.images},
                  **decoder_parts},
        "calibration": _calibration_record(runner.bundle / "decoder" / "calibration.json"),
        "plan": plan.as_dict(),
        "artifacts": artifact_table(runner.bundle),
        "tools": tool_versions(),
        "stage_keys": {"tokenizer": k_tok, "vision": k_vis, "decoder": k_dec},
    }
    write_json(runner.bundle / MANIFEST, seal_manifest(manifest))
    # The previous bundle at --out is replaced only by one that verifies (hashes, seal, every part loads).
    report = verify_bundle(runner.bundle, deep=True)
    if not report.ok:
        raise EdgekitError(f"the new bundle does not verify, so {runner.out} was left as it was: {report.errors[0]}",
                           exit_code=1)
    return runner.finish()


def unified_quant_config(config: BuildConfig):
    """The calibration behind a unified checkpoint for a build precision (None: unquantized FP16)."""
    from edgekit.quant.calibrate import QuantConfig

    p, m = config.precision, config.method
    if p in ("fp16", "fp32"):
        return None
    if p == "int8":
        raise EdgekitError("--backend tensorrt has no INT8 weight-only path (TensorRT Edge-LLM runs INT8 as "
                           "W8A8 SmoothQuant): use --precision w8a8, or int4")
    if p == "w8a8":
        if m not in ("smoothquant", "rtn"):
            raise EdgekitError(f"--precision w8a8 is SmoothQuant: use --method smoothquant (or rtn for no smoothing), not {m}")
        return QuantConfig(method="smoothquant", grid="int8:channel", alpha=0.5 if m == "smoothquant" else 0.0,
                           samples=config.samples, n_samples=config.calib_n, seed=config.seed)
    if m == "smoothquant":
        raise EdgekitError("--method smoothquant makes W8A8: use --precision w8a8")
    return QuantConfig(method=m, grid=f"nvidia:w4a16:g{config.group_size}", samples=config.samples,
                       n_samples=config.calib_n, seed=config.seed)


def _tensorrt_decoder(ck, bundle: Path, qcfg, calib_dir: Path, work: Path) -> list[str]:
    """decoder/unified (ModelOpt unified checkpoint, or the FP16 checkpoint) + Edge-LLM's ONNX when installed."""
    from edgekit.atomic import write_json
    from edgekit.edgellm import check_int4_export, check_int8_export, find_exporter, run_export

    unified = bundle / "decoder" / "unified"
    if qcfg is None:
        _copy_checkpoint(ck, unified)
    else:
        from edgekit.export.modelopt_unified import write_unified_checkpoint
        from edgekit.quant.calibrate import calibrate

        calibrated = calibrate(ck.path, qcfg, calib_dir)
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
            (check_int4_export if qcfg.grid.startswith("nvidia:w4a16") else check_int8_export)(onnx_path, unified)
        shutil.rmtree(onnx_dir, ignore_errors=True)
        tmp.rename(onnx_dir)  # the whole directory appears at once
    return [str(p.relative_to(bundle)) for p in sorted((bundle / "decoder").rglob("*")) if p.is_file()]


def _copy_checkpoint(ck, out: Path) -> None:
    from edgekit.atomic import write_bytes
    from edgekit.export.modelopt_unified import EXTRA_FILES

    for f in [ck.path / "config.json", *ck.weight_files(), *(ck.path / n for n in EXTRA_FILES)]:
        if f.is_file() and f.suffix != ".bin":
            write_bytes(out / f.name, f.read_bytes())  # whole shards: an FP16 build is a copy, once
    if (ck.path / "model.safetensors.index.json").is_file():
        write_bytes(out / "model.safetensors.index.json", (ck.path / "model.safetensors.index.json").read_bytes())


def _quant_algo(unified: Path) -> dict:
    import json

    f = unified / "hf_quant_config.json"
    if not f.is_file():
        return {}
    q = json.loads(f.read_text())["quantization"]
    return {"quant_algo": q["quant_algo"], **({"group_size": q["group_size"]} if "group_size" in q else {})}


def _edgellm_identity() -> str | None:
    """Which exporter (if any) shapes decoder/edgellm_onnx: part of the decoder stage's cache key."""
    from edgekit.edgellm import find_exporter

    exe = find_exporter()
    if exe is None:
        return None
    from importlib.metadata import PathDistribution

    for dist in exe.resolve().parent.parent.glob("lib/python*/site-packages/tensorrt_edgellm-*.dist-info"):
        return f"tensorrt-edgellm {PathDistribution(dist).version}"
    return "tensorrt-edgellm (version unknown)"


# INT8 vision, as measured best on the e2e agreement test (tests/test_int8_vision_e2e.py): percentile
# ranges, GPTQ-rounded weights, patch embedding and merger in float.
VISION_CALIBRATION = "percentile"
VISION_CALIB_IMAGES = 16


def export_vision(ck, out: Path, resolution: tuple[int, int], images: int, precision: str, samples: str, work: Path) -> dict:
    """The vision tower as ONNX at one resolution; INT8 is calibrated on the samples' calib split."""
    from edgekit.export.vision_onnx import (FLOAT_PARTS, export_float, patch_batches, quantize_int8, sample_images,
                                            split_calibration)
    from edgekit.model.processor import load_processor_config

    width, height = resolution
    if precision in ("fp32", "fp16"):
        export_float(ck, width, height, images, precision, out)
        return {"precision": precision}
    fp32 = work / "vision_fp32.onnx"
    info = export_float(ck, width, height, images, "fp32", fp32)
    calib, _ = split_calibration(sample_images(samples.split(",")), VISION_CALIB_IMAGES, 0)
    batches = patch_batches(calib, info, load_processor_config(ck.path))
    report = quantize_int8(fp32, out, batches, method=VISION_CALIBRATION, float_parts=FLOAT_PARTS, gptq=True)
    fp32.unlink(missing_ok=True)
    return report


def _calibration_record(record: Path) -> dict | None:
    import json

    return json.loads(record.read_text()) if record.is_file() else None
