"""`edgekit build`: one checkpoint + one target -> a verified, reproducible bundle.

Stages (each cached by a content key, see stages.py, so a rerun after a failure or a kill resumes):
  plan       memory fit and roofline; refuses a build that cannot fit (no files)
  tokenizer  config, tokenizer, chat template and processor settings -> tokenizer/
  vision     the vision tower as static-shape ONNX at the target's camera resolution -> vision/
  decoder    gguf: decoder GGUF (+ mmproj GGUF); tensorrt: ModelOpt unified checkpoint (+ Edge-LLM's ONNX) -> decoder/
  engines    build-engines.sh for the device
  manifest   edgekit.json, written last: a bundle without it never verifies
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgekit.bundle.build_config import BuildConfig, ResolvedBuild, resolve
from edgekit.errors import EdgekitError

TOKENIZER_FILES = (
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
VISION_DATA = "vision/vision.onnx.data"  # the vision graph's weights, when over 2 GB (edgekit.export.onnx_files)


def _copy_tokenizer(source: Path, bundle: Path) -> list[str]:
    from edgekit.atomic import write_bytes

    out = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            write_bytes(bundle / "tokenizer" / name, (source / name).read_bytes())
            out.append(f"tokenizer/{name}")
    return out


def build_bundle(
    model: str | Path,
    out: str | Path,
    config: BuildConfig,
    on_stage: Callable[[str, str], None] | None = None,
    *,
    allow_nonfinite: bool = False,
    on_progress: Callable[[str, int, int], None] | None = None,
    calib_cache: str | Path | None = None,
    device: str = "cpu",
) -> Path:
    """Build (or resume building) a bundle for `config.target` from checkpoint `model` into `out`.

    `calib_cache`: where decoder calibrations are kept between builds (default: default_cache_dir()/calibration),
    so a rebuild with the same checkpoint, samples and quantizer settings does not calibrate again.
    `on_progress(what, done, total)`: steps inside the long stages (calibrated layers, decoder tensors written).
    `device`: where decoder calibration runs (edgekit.devices); not part of the bundle's identity, like threads."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.processor import load_processor_config
    from edgekit.targets.plan import make_plan, refuse_if_unfit
    from edgekit.bundle.stages import StageRunner, claim_out
    from edgekit.devices import resolve_device
    from edgekit.outputs import refuse_overlap, spec_paths
    from edgekit.targets import get_target

    model, out = Path(model), Path(out)
    build = resolve(config, get_target(config.target))  # one line on the first option that does not build
    config, backend, target = build.config, build.backend, build.target
    torch_device = resolve_device(device)  # `--device cuda` without one: refused before any work
    refuse_overlap(out, [model, *spec_paths(config.samples)])  # never into the checkpoint or the samples
    if calib_cache is not None:
        refuse_overlap(Path(calib_cache), [model, *spec_paths(config.samples)], flag="--calib-cache")
    claim_out(out)  # absent, empty or an edgekit bundle: refused before any work otherwise
    ck = open_checkpoint(model, allow_nonfinite=allow_nonfinite)
    if config.context > ck.text.max_position:
        raise EdgekitError(f"--context {config.context}: the model's max_position_embeddings is {ck.text.max_position}")
    if config.resolution is not None and min(config.resolution) < ck.vision.patch * ck.vision.merge:
        raise EdgekitError(
            f"--resolution {config.resolution[0]}x{config.resolution[1]}: each side must be at least "
            f"{ck.vision.patch * ck.vision.merge} px (one merged patch)"
        )
    shapes = {n: i.shape for n, i in ck.tensors.items()}
    # Fail before spending time: the plan refuses what cannot fit or is unsupported.
    plan = make_plan(
        ck.text,
        ck.vision,
        shapes,
        target,
        config.precision,
        config.context,
        config.images,
        config.resolution,
        backend=backend,
        group_size=config.group_size,
        gguf_type=config.gguf_type,
        vision_precision=build.vision_precision,
        processor=load_processor_config(ck.path),
    )
    refuse_if_unfit(plan)
    if not ck.chat_template:
        raise EdgekitError(
            f"{ck.path}: no chat template (chat_template.jinja, chat_template.json or tokenizer_config.json "
            "'chat_template'); copy it from the source checkpoint"
        )
    from edgekit.model.chat_frames import chat_frames

    frames = chat_frames(ck.chat_template)  # renders it now (bounded): a broken template fails before any stage
    if build.needs_samples:
        from edgekit.data.samples import load_samples

        load_samples(config.samples.split(","))  # a missing file or a malformed line fails here, not in a stage

    runner = StageRunner(out, on_stage)
    try:
        return _run_stages(
            runner,
            ck,
            build,
            plan,
            Path(calib_cache or default_calib_cache()),
            frames,
            on_progress or (lambda what, done, total: None),
            torch_device,
        )
    finally:
        runner.close()
        ck.close()


def default_calib_cache() -> Path:
    from edgekit.cache_dir import default_cache_dir

    return default_cache_dir() / "calibration"


def _run_stages(
    runner,
    ck,
    build: ResolvedBuild,
    plan,
    calib_dir: Path,
    frames: dict | None,
    progress: Callable[[str, int, int], None],
    device,
) -> Path:
    from edgekit.atomic import write_json, write_text
    from edgekit.bundle.parts import edgellm_identity, tensorrt_decoder, vision_part
    from edgekit.bundle.manifest import MANIFEST, SCHEMA, artifact_table, seal_manifest, tool_versions, verify_bundle
    from edgekit.model.vision_graph import read_fp32_blocks
    from edgekit.quant.trained import method_label, trained_from

    config, backend, target, fmt = build.config, build.backend, build.target, build.decoder
    vision_precision = build.vision_precision  # the build's override, or the precision's default
    integer_kernels = not target.is_nvidia  # INT8 vision: ONNX Runtime's integer kernels on CPUs, QDQ for TensorRT
    resolution = tuple(plan.resolution)
    source_key = ck.content_hash
    base = {"source": source_key, "config": config.as_dict(), "backend": backend, "target": target.name}

    k_tok = runner.run("tokenizer", {"source": source_key}, lambda b: _copy_tokenizer(ck.path, b))

    def vision_stage(bundle: Path) -> list[str]:
        vision_part(
            ck,
            bundle / "vision" / "vision.onnx",
            resolution,
            config.images,
            vision_precision,
            config.samples,
            runner.work,
            integer_kernels=integer_kernels,
        )
        return ["vision/vision.onnx"] + ([VISION_DATA] if (bundle / VISION_DATA).is_file() else [])

    k_vis = runner.run("vision", {**base, "vision_precision": vision_precision, "resolution": resolution}, vision_stage)

    decoder_parts: dict[str, dict] = {}
    if backend == "gguf":

        def decoder_stage(bundle: Path) -> list[str]:
            from edgekit.export.gguf import write_decoder_gguf
            from edgekit.export.mmproj import write_mmproj_gguf
            from edgekit.quant.trained import is_qat_dir

            calibrated, outputs = None, ["decoder/decoder.gguf", "decoder/mmproj.gguf"]
            if build.calibration is not None and (config.method != "rtn" or is_qat_dir(ck.path)):
                from edgekit.quant.calibrate import calibrate

                calibrated = calibrate(
                    ck.path,
                    build.calibration,
                    calib_dir,
                    on_layer=_layer_progress(progress, config.method),
                    device=device,
                )
                write_json(bundle / "decoder" / "calibration.json", calibrated.record)
                outputs.append("decoder/calibration.json")
            write_decoder_gguf(
                ck.path,
                bundle / "decoder" / "decoder.gguf",
                fmt,
                calibrated=calibrated,
                on_tensor=_counter(progress, "decoder tensors", len(ck.tensors)),
            )
            write_mmproj_gguf(ck.path, bundle / "decoder" / "mmproj.gguf", "gguf:f16")
            return outputs

        k_dec = runner.run("decoder", {**base, "gguf_type": fmt.type_name}, decoder_stage)
        decoder_parts["decoder"] = {
            "format": "gguf",
            "path": "decoder/decoder.gguf",
            "precision": fmt.type_name,
            "method": method_label(ck.path, config.method) if fmt.quantized else "none",
        }
        decoder_parts["mmproj"] = {"format": "mmproj-gguf", "path": "decoder/mmproj.gguf", "precision": "f16"}

    if backend == "tensorrt":
        qcfg = build.calibration

        def decoder_stage(bundle: Path) -> list[str]:
            return tensorrt_decoder(
                ck,
                bundle,
                qcfg,
                calib_dir,
                runner.work,
                on_layer=_layer_progress(progress, qcfg.method if qcfg else ""),
                device=device,
            )

        k_dec = runner.run(
            "decoder", {**base, "unified": qcfg.key() if qcfg else None, "edgellm": edgellm_identity()}, decoder_stage
        )
        decoder_parts["decoder"] = {
            "format": "modelopt-unified" if qcfg else "hf-checkpoint",
            "path": "decoder/unified",
            "precision": config.precision,
            "method": method_label(ck.path, qcfg.method) if qcfg else "none",
            **build.unified_identity,
        }
        if (runner.bundle / "decoder" / "edgellm_onnx").is_dir():
            decoder_parts["decoder_onnx"] = {
                "format": "edgellm-onnx-dir",
                "path": "decoder/edgellm_onnx",
                "exporter": f"tensorrt-edgellm-export --skip-visual ({edgellm_identity()})",
            }

    def engines_stage(bundle: Path) -> list[str]:
        from edgekit.bundle.engines_script import engines_script

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
        "source": {"content_hash": source_key, "files": ck.file_hashes(), **trained_from(ck.path)},
        "model": {
            "text": ck.text.as_dict(),
            "vision": ck.vision.as_dict(),
            "mrope_section": list(ck.text.mrope_section),
            "token_ids": {
                "image": ids.image,
                "video": ids.video,
                "vision_start": ids.vision_start,
                "vision_end": ids.vision_end,
                "bos": ids.bos,
                "eos": ids.eos,
            },
            "special_tokens": dict(sorted(ck.special_tokens.items())),
        },
        "preprocessing": {**ck.preprocessor_config, "resolution": list(resolution), "images": config.images},
        "prompt": frames,  # the chat template as text frames, for hosts without Jinja
        "context": config.context,
        "tokenizer_dir": "tokenizer",
        "parts": {
            "vision": {
                "format": "onnx",
                "path": "vision/vision.onnx",
                "precision": vision_precision,
                "resolution": list(resolution),
                "images": config.images,
                **({"external_data": VISION_DATA} if (runner.bundle / VISION_DATA).is_file() else {}),
                **(
                    {"fp32_blocks": read_fp32_blocks(runner.bundle / "vision/vision.onnx")}
                    if vision_precision == "fp16"
                    else {}
                ),
                **({"int8_graph": "integer" if integer_kernels else "qdq"} if vision_precision == "int8" else {}),
            },
            **decoder_parts,
        },
        "calibration": _calibration_record(runner.bundle / "decoder" / "calibration.json"),
        "plan": plan.as_dict(),
        "artifacts": artifact_table(runner.bundle),
        "tools": tool_versions(),
        "stage_keys": {"tokenizer": k_tok, "vision": k_vis, "decoder": k_dec},
    }
    try:
        sealed = seal_manifest(manifest)
    except ValueError as e:  # no canonical form: NaN or a huge integer, e.g. from preprocessor_config.json
        raise EdgekitError(
            f"{ck.path}: the bundle manifest cannot be sealed ({e}); check preprocessor_config.json "
            "for NaN, infinities or integers beyond 2^53"
        ) from None
    write_json(runner.bundle / MANIFEST, sealed)
    # The previous bundle at --out is replaced only by one that verifies (hashes, seal, every part loads).
    report = verify_bundle(runner.bundle, deep=True)
    if not report.ok:
        raise EdgekitError(
            f"the new bundle does not verify, so {runner.out} was left as it was: {report.errors[0]}", exit_code=1
        )
    return runner.finish()


def _layer_progress(progress: Callable[[str, int, int], None], method: str):
    return lambda i, total, status: progress(f"calibrate ({method}): layer {i}", i + 1, total)


def _counter(progress: Callable[[str, int, int], None], what: str, total: int):
    """on_tensor for a writer: counts what it wrote (the total is an upper bound: not every tensor goes there)."""
    done = [0]

    def step(_item) -> None:
        done[0] += 1
        progress(what, done[0], max(total, done[0]))

    return step


def _calibration_record(record: Path) -> dict | None:
    from edgekit.json_files import read_json

    return read_json(record) if record.is_file() else None
