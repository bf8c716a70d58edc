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


def _copy_tokenizer(source: Path, bundle: Path) -> list[str]:
    from edgekit.atomic import write_bytes

    out = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            write_bytes(bundle / "tokenizer" / name, (source / name).read_bytes())
            out.append(f"tokenizer/{name}")
    return out


def build_bundle(model: str | Path, out: str | Path, config: BuildConfig,
                 on_stage: Callable[[str, str], None] | None = None) -> Path:
    """Build (or resume building) a bundle for `config.target` from checkpoint `model` into `out`."""
    from edgekit.atomic import write_json, write_text
    from edgekit.bundle import MANIFEST, SCHEMA, artifact_table, tool_versions
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.plan import make_plan, refuse_if_unfit
    from edgekit.stages import StageRunner
    from edgekit.targets import get_target

    model, out = Path(model), Path(out)
    if config.method not in METHODS:
        raise EdgekitError(f"--method {config.method!r}: choose one of {', '.join(METHODS)}")
    target = get_target(config.target)
    backend = config.backend or target.default_backend()
    if backend not in target.backends:
        raise EdgekitError(f"target {target.name} has no {backend!r} backend; it supports {', '.join(target.backends)}")
    ck = open_checkpoint(model)
    shapes = {n: i.shape for n, i in ck.tensors.items()}
    # Fail before spending time: the plan refuses what cannot fit or is unsupported.
    plan = make_plan(ck.text, ck.vision, shapes, target, config.precision, config.context, config.images, config.resolution)
    refuse_if_unfit(plan)
    if backend == "tensorrt":  # fail before spending time
        raise EdgekitError(
            f"backend 'tensorrt' (target {target.name}): the ModelOpt unified checkpoint writer for TensorRT Edge-LLM is "
            f"not in this version of edgekit yet; build with --backend gguf (llama.cpp, CUDA on Jetson) for now")
    vision_precision = config.vision_precision or plan.vision_precision
    resolution = tuple(plan.resolution)

    runner = StageRunner(out, on_stage)
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
    write_json(runner.bundle / MANIFEST, manifest)
    ck.close()
    return runner.finish()


VISION_CALIBRATION = "percentile"  # measured best of minmax/percentile/entropy on the e2e agreement test
VISION_CALIB_IMAGES = 16


def export_vision(ck, out: Path, resolution: tuple[int, int], images: int, precision: str, samples: str, work: Path) -> dict:
    """The vision tower as ONNX at one resolution; INT8 is calibrated on the samples' calib split."""
    from edgekit.export.vision_onnx import export_float, patch_batches, quantize_int8, sample_images, split_calibration
    from edgekit.model.processor import load_processor_config

    width, height = resolution
    if precision in ("fp32", "fp16"):
        export_float(ck, width, height, images, precision, out)
        return {"precision": precision}
    fp32 = work / "vision_fp32.onnx"
    info = export_float(ck, width, height, images, "fp32", fp32)
    calib, _ = split_calibration(sample_images(samples.split(",")), VISION_CALIB_IMAGES, 0)
    batches = patch_batches(calib, info, load_processor_config(ck.path))
    report = quantize_int8(fp32, out, batches, method=VISION_CALIBRATION)
    fp32.unlink(missing_ok=True)
    return report


def _calibration_record(record: Path) -> dict | None:
    import json

    return json.loads(record.read_text()) if record.is_file() else None
