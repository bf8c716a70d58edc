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

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from edgekit.bundle.manifest import MAX_IMAGES, MAX_SIDE
from edgekit.errors import EdgekitError
from edgekit.quant.formats import BACKENDS, Format, parse
from edgekit.quant.precisions import BUILD_PRECISIONS, builds_on, decoder_format

CONFIG_VERSION = 1
TOKENIZER_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json",
                   "tokenizer_config.json", "chat_template.jinja")
METHODS = ("rtn", "gptq", "awq", "smoothquant")
GROUP_SIZES = tuple(parse("nvidia:w4a16").group_variants)  # W4A16's groups
VISION_PRECISIONS = ("fp32", "fp16", "int8")
MAX_CONTEXT = 1 << 20
VISION_DATA = "vision/vision.onnx.data"  # the vision graph's weights, when over 2 GB (edgekit.export.onnx_files)


@dataclass(frozen=True)
class BuildConfig:
    target: str
    precision: str = "int4"
    method: str | None = None  # None: the precision's best (default_method); resolved before anything is recorded
    backend: str | None = None  # None: the target's first backend
    samples: str = "default"  # data/calibration_mix.py
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

    def resolved(self, backend: str) -> "BuildConfig":
        """This config with the method the build will use filled in (what the manifest and stage keys record)."""
        return replace(self, method=self.method or default_method(self.precision, backend))

    def decoder_format(self, backend: str) -> Format | None:
        """The decoder's format on `backend` (None: the unquantized checkpoint)."""
        return decoder_format(self.precision, backend, group_size=self.group_size, gguf_type=self.gguf_type)

    def validate(self) -> None:
        """Every option's type and range, before the first stage runs (one line naming the option)."""
        def whole(name: str, value, lo: int, hi: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise EdgekitError(f"--{name.replace('_', '-')} {value!r}: must be a whole number from {lo} to {hi}")

        if self.precision not in BUILD_PRECISIONS:
            raise EdgekitError(f"--precision {self.precision!r}: choose one of {', '.join(BUILD_PRECISIONS)}")
        if self.method is not None and self.method not in METHODS:
            raise EdgekitError(f"--method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise EdgekitError(f"--backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.gguf_type is not None:
            decoder_format(self.precision, "gguf", gguf_type=self.gguf_type)  # one line naming the choices
        if self.vision_precision is not None and self.vision_precision not in VISION_PRECISIONS:
            raise EdgekitError(f"--vision-precision {self.vision_precision!r}: choose one of {', '.join(VISION_PRECISIONS)}")
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


def default_method(precision: str, backend: str) -> str:
    """GPTQ on the default calibration mix (README, "Quality"); SmoothQuant's migration first where TensorRT quantizes
    activations too (W8A8 by definition; FP8, NVFP4: README, "The TensorRT formats side by side"); float: nothing."""
    if precision in ("fp16", "fp32"):
        return "rtn"
    fmt = decoder_format(precision, backend) if builds_on(precision, backend) else None
    return "smoothquant" if backend == "tensorrt" and fmt is not None and fmt.quantizes_activations else "gptq"


def _copy_tokenizer(source: Path, bundle: Path) -> list[str]:
    from edgekit.atomic import write_bytes

    out = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            write_bytes(bundle / "tokenizer" / name, (source / name).read_bytes())
            out.append(f"tokenizer/{name}")
    return out


def _needs_samples(config: BuildConfig, vision_precision: str, backend: str) -> bool:
    """Calibration reads the samples: a calibrated decoder, activation scales (W8A8, NVFP4), or INT8 vision."""
    scales = config.precision == "w8a8" or bool(getattr(config.decoder_format(backend), "input_scale_range", None))
    return config.method != "rtn" or vision_precision == "int8" or scales


def build_bundle(model: str | Path, out: str | Path, config: BuildConfig,
                 on_stage: Callable[[str, str], None] | None = None, *, allow_nonfinite: bool = False,
                 on_progress: Callable[[str, int, int], None] | None = None,
                 calib_cache: str | Path | None = None, device: str = "cpu") -> Path:
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
    config.validate()
    torch_device = resolve_device(device)  # `--device cuda` without one: refused before any work
    refuse_overlap(out, [model, *spec_paths(config.samples)])  # never into the checkpoint or the samples
    if calib_cache is not None:
        refuse_overlap(Path(calib_cache), [model, *spec_paths(config.samples)], flag="--calib-cache")
    claim_out(out)  # absent, empty or an edgekit bundle: refused before any work otherwise
    target = get_target(config.target)
    backend = config.backend or target.default_backend(config.precision)
    if backend not in target.backends:
        raise EdgekitError(f"target {target.name} has no {backend!r} backend; it supports {', '.join(target.backends)}")
    config = config.resolved(backend)
    ck = open_checkpoint(model, allow_nonfinite=allow_nonfinite)
    if config.context > ck.text.max_position:
        raise EdgekitError(f"--context {config.context}: the model's max_position_embeddings is {ck.text.max_position}")
    if config.resolution is not None and min(config.resolution) < ck.vision.patch * ck.vision.merge:
        raise EdgekitError(f"--resolution {config.resolution[0]}x{config.resolution[1]}: each side must be at least "
                           f"{ck.vision.patch * ck.vision.merge} px (one merged patch)")
    shapes = {n: i.shape for n, i in ck.tensors.items()}
    # Fail before spending time: the plan refuses what cannot fit or is unsupported.
    plan = make_plan(ck.text, ck.vision, shapes, target, config.precision, config.context, config.images, config.resolution,
                     backend=backend, group_size=config.group_size, gguf_type=config.gguf_type,
                     vision_precision=config.vision_precision, processor=load_processor_config(ck.path))
    refuse_if_unfit(plan)
    if not ck.chat_template:
        raise EdgekitError(f"{ck.path}: no chat template (chat_template.jinja, chat_template.json or tokenizer_config.json "
                           "'chat_template'); copy it from the source checkpoint")
    from edgekit.model.chat_frames import chat_frames

    frames = chat_frames(ck.chat_template)  # renders it now (bounded): a broken template fails before any stage
    if backend == "tensorrt":  # fail before spending time
        unified_quant_config(config)
    if _needs_samples(config, plan.vision_precision, backend):
        from edgekit.data.samples import load_samples

        load_samples(config.samples.split(","))  # a missing file or a malformed line fails here, not in a stage

    runner = StageRunner(out, on_stage)
    try:
        return _run_stages(runner, ck, config, target, backend, plan, Path(calib_cache or default_calib_cache()),
                           frames, on_progress or (lambda what, done, total: None), torch_device)
    finally:
        runner.close()
        ck.close()


def default_calib_cache() -> Path:
    from edgekit.cache_dir import default_cache_dir

    return default_cache_dir() / "calibration"


def _run_stages(runner, ck, config: BuildConfig, target, backend: str, plan, calib_dir: Path, frames: dict | None,
                progress: Callable[[str, int, int], None], device) -> Path:
    from edgekit.atomic import write_json, write_text
    from edgekit.bundle.parts import edgellm_identity, tensorrt_decoder, vision_part
    from edgekit.bundle.manifest import MANIFEST, SCHEMA, artifact_table, seal_manifest, tool_versions, verify_bundle
    from edgekit.model.vision_graph import read_fp32_blocks
    from edgekit.quant.trained import method_label, trained_from

    vision_precision = plan.vision_precision  # the build's override, or the precision's default
    integer_kernels = not target.is_nvidia  # INT8 vision: ONNX Runtime's integer kernels on CPUs, QDQ for TensorRT
    resolution = tuple(plan.resolution)
    source_key = ck.content_hash
    base = {"source": source_key, "config": config.as_dict(), "backend": backend, "target": target.name}

    k_tok = runner.run("tokenizer", {"source": source_key}, lambda b: _copy_tokenizer(ck.path, b))

    def vision_stage(bundle: Path) -> list[str]:
        vision_part(ck, bundle / "vision" / "vision.onnx", resolution, config.images, vision_precision,
                    config.samples, runner.work, integer_kernels=integer_kernels)
        return ["vision/vision.onnx"] + ([VISION_DATA] if (bundle / VISION_DATA).is_file() else [])

    k_vis = runner.run("vision", {**base, "vision_precision": vision_precision, "resolution": resolution}, vision_stage)

    decoder_parts: dict[str, dict] = {}
    fmt = config.decoder_format(backend)
    if backend == "gguf":

        def decoder_stage(bundle: Path) -> list[str]:
            from edgekit.export.gguf import write_decoder_gguf
            from edgekit.export.mmproj import write_mmproj_gguf
            from edgekit.quant.trained import is_qat_dir

            calibrated, outputs = None, ["decoder/decoder.gguf", "decoder/mmproj.gguf"]
            if (config.method != "rtn" or is_qat_dir(ck.path)) and fmt.quantized:
                from edgekit.quant.calibrate import QuantConfig, calibrate

                qcfg = QuantConfig(method=config.method, grid=fmt.grid_name, samples=config.samples,
                                   n_samples=config.calib_n, seed=config.seed)
                calibrated = calibrate(ck.path, qcfg, calib_dir, on_layer=_layer_progress(progress, config.method),
                                       device=device)
                write_json(bundle / "decoder" / "calibration.json", calibrated.record)
                outputs.append("decoder/calibration.json")
            write_decoder_gguf(ck.path, bundle / "decoder" / "decoder.gguf", fmt, calibrated=calibrated,
                               on_tensor=_counter(progress, "decoder tensors", len(ck.tensors)))
            write_mmproj_gguf(ck.path, bundle / "decoder" / "mmproj.gguf", "gguf:f16")
            return outputs

        k_dec = runner.run("decoder", {**base, "gguf_type": fmt.type_name}, decoder_stage)
        decoder_parts["decoder"] = {"format": "gguf", "path": "decoder/decoder.gguf", "precision": fmt.type_name,
                                    "method": method_label(ck.path, config.method) if fmt.quantized else "none"}
        decoder_parts["mmproj"] = {"format": "mmproj-gguf", "path": "decoder/mmproj.gguf", "precision": "f16"}

    if backend == "tensorrt":
        qcfg = unified_quant_config(config)

        def decoder_stage(bundle: Path) -> list[str]:
            return tensorrt_decoder(ck, bundle, qcfg, calib_dir, runner.work,
                                    on_layer=_layer_progress(progress, qcfg.method if qcfg else ""), device=device)

        k_dec = runner.run("decoder", {**base, "unified": qcfg.key() if qcfg else None,
                                       "edgellm": edgellm_identity()}, decoder_stage)
        decoder_parts["decoder"] = {"format": "modelopt-unified" if qcfg else "hf-checkpoint", "path": "decoder/unified",
                                    "precision": config.precision, "method": method_label(ck.path, qcfg.method) if qcfg else "none",
                                    **_unified_identity(qcfg)}
        if (runner.bundle / "decoder" / "edgellm_onnx").is_dir():
            decoder_parts["decoder_onnx"] = {"format": "edgellm-onnx-dir", "path": "decoder/edgellm_onnx",
                                             "exporter": f"tensorrt-edgellm-export --skip-visual ({edgellm_identity()})"}

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
        "model": {"text": ck.text.as_dict(), "vision": ck.vision.as_dict(), "mrope_section": list(ck.text.mrope_section),
                  "token_ids": {"image": ids.image, "video": ids.video, "vision_start": ids.vision_start,
                                "vision_end": ids.vision_end, "bos": ids.bos, "eos": ids.eos},
                  "special_tokens": dict(sorted(ck.special_tokens.items()))},
        "preprocessing": {**ck.preprocessor_config, "resolution": list(resolution), "images": config.images},
        "prompt": frames,  # the chat template as text frames, for hosts without Jinja
        "context": config.context,
        "tokenizer_dir": "tokenizer",
        "parts": {"vision": {"format": "onnx", "path": "vision/vision.onnx", "precision": vision_precision,
                             "resolution": list(resolution), "images": config.images,
                             **({"external_data": VISION_DATA} if (runner.bundle / VISION_DATA).is_file() else {}),
                             **({"fp32_blocks": read_fp32_blocks(runner.bundle / "vision/vision.onnx")}
                                if vision_precision == "fp16" else {}),
                             **({"int8_graph": "integer" if integer_kernels else "qdq"}
                                if vision_precision == "int8" else {})},
                  **decoder_parts},
        "calibration": _calibration_record(runner.bundle / "decoder" / "calibration.json"),
        "plan": plan.as_dict(),
        "artifacts": artifact_table(runner.bundle),
        "tools": tool_versions(),
        "stage_keys": {"tokenizer": k_tok, "vision": k_vis, "decoder": k_dec},
    }
    try:
        sealed = seal_manifest(manifest)
    except ValueError as e:  # no canonical form: NaN or a huge integer, e.g. from preprocessor_config.json
        raise EdgekitError(f"{ck.path}: the bundle manifest cannot be sealed ({e}); check preprocessor_config.json "
                           "for NaN, infinities or integers beyond 2^53") from None
    write_json(runner.bundle / MANIFEST, sealed)
    # The previous bundle at --out is replaced only by one that verifies (hashes, seal, every part loads).
    report = verify_bundle(runner.bundle, deep=True)
    if not report.ok:
        raise EdgekitError(f"the new bundle does not verify, so {runner.out} was left as it was: {report.errors[0]}",
                           exit_code=1)
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


def unified_quant_config(config: BuildConfig):
    """The calibration behind a unified checkpoint for a build (None: the unquantized FP16 checkpoint)."""
    from edgekit.quant.calibrate import QuantConfig

    fmt, m = config.decoder_format("tensorrt"), config.method or default_method(config.precision, "tensorrt")
    if fmt is None:
        return None
    if fmt.name == "int8:channel":  # W8A8 SmoothQuant
        if m not in ("smoothquant", "rtn"):
            raise EdgekitError(f"--precision w8a8 is SmoothQuant: use --method smoothquant (or rtn for no smoothing), not {m}")
        return QuantConfig(method="smoothquant", grid=fmt.grid_name, alpha=0.5 if m == "smoothquant" else 0.0,
                           samples=config.samples, n_samples=config.calib_n, seed=config.seed)
    if m == "smoothquant" and not fmt.quantizes_activations:
        raise EdgekitError(f"--method smoothquant is for formats whose activations TensorRT quantizes (--precision "
                           f"w8a8, fp8, nvfp4), not {fmt.name}")
    return QuantConfig(method=m, grid=fmt.grid_name, samples=config.samples, n_samples=config.calib_n, seed=config.seed)


def _unified_identity(qcfg) -> dict:
    """quant_algo (and group size) of the unified checkpoint a calibration config produces, from its Format."""
    if qcfg is None:
        return {}
    fmt = qcfg.format
    algo = fmt.unified_algo(activation_scales=qcfg.method == "smoothquant" or bool(fmt.input_scale_range))
    return {"quant_algo": algo, **({"group_size": fmt.group_size} if len(fmt.group_variants) > 1 else {})}


def _calibration_record(record: Path) -> dict | None:
    from edgekit.json_files import read_json

    return read_json(record) if record.is_file() else None
