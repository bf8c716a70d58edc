"""What a build is asked for and what it means on its target, decided once before the first stage.

`BuildConfig` holds the options as given (validated in one place, one line naming the option). `resolve` turns a config
and its target into a `ResolvedBuild`: the backend, the decoder's format, the method, the decoder's calibration, the
vision tower's precision and whether the samples are read. The plan, the stages and the manifest read that one value,
so no stage decodes the precision again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from edgekit.bundle.manifest import MAX_IMAGES, MAX_SIDE
from edgekit.errors import EdgekitError
from edgekit.quant.formats import BACKENDS, Format, parse
from edgekit.quant.precisions import BUILD_PRECISIONS, builds_on, decoder_format

CONFIG_VERSION = 1
METHODS = ("rtn", "gptq", "awq", "smoothquant")
GROUP_SIZES = tuple(parse("nvidia:w4a16").group_variants)  # W4A16's groups
VISION_PRECISIONS = ("fp32", "fp16", "int8")
MAX_CONTEXT = 1 << 20


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
            raise EdgekitError(
                f"--vision-precision {self.vision_precision!r}: choose one of {', '.join(VISION_PRECISIONS)}"
            )
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


def decoder_calibration(config: BuildConfig, backend: str):
    """The QuantConfig (edgekit.quant.calibrate) behind a build's quantized decoder; None for a float one. On tensorrt
    a unified checkpoint always comes from a calibration (RTN included); on gguf the decoder stage runs it unless the
    weights are RTN from the file."""
    from edgekit.quant.calibrate import QuantConfig

    fmt, m = config.decoder_format(backend), config.method or default_method(config.precision, backend)
    if fmt is None or not fmt.quantized:
        return None
    common = {"grid": fmt.grid_name, "samples": config.samples, "n_samples": config.calib_n, "seed": config.seed}
    if backend == "tensorrt" and fmt.name == "int8:channel":  # W8A8 SmoothQuant
        if m not in ("smoothquant", "rtn"):
            raise EdgekitError(
                f"--precision w8a8 is SmoothQuant: use --method smoothquant (or rtn for no smoothing), not {m}"
            )
        return QuantConfig(method="smoothquant", alpha=0.5 if m == "smoothquant" else 0.0, **common)
    if m == "smoothquant" and not fmt.quantizes_activations:
        raise EdgekitError(
            f"--method smoothquant is for formats whose activations TensorRT quantizes (--precision "
            f"w8a8, fp8, nvfp4 on --backend tensorrt), not {fmt.name}"
        )
    return QuantConfig(method=m, **common)


@dataclass(frozen=True)
class ResolvedBuild:
    """A config on its target, decided once: every stage, the plan and the manifest read this."""

    config: BuildConfig  # with the method filled in (what the manifest and the stage keys record)
    target: object  # edgekit.targets.Target
    backend: str
    decoder: Format | None  # the decoder's weight format; None: TensorRT's FP16 checkpoint as it is
    calibration: object | None  # the decoder's QuantConfig (decoder_calibration); None: a float decoder
    vision_precision: str  # fp32 | fp16 | int8
    needs_samples: bool  # something reads the samples: a calibrated decoder, activation scales or INT8 vision

    @property
    def unified_identity(self) -> dict:
        """quant_algo (and W4A16's group size) of the unified checkpoint a tensorrt build writes; {} otherwise."""
        q = self.calibration
        if self.backend != "tensorrt" or q is None:
            return {}
        fmt = q.format
        algo = fmt.unified_algo(activation_scales=q.method == "smoothquant" or bool(fmt.input_scale_range))
        return {"quant_algo": algo, **({"group_size": fmt.group_size} if len(fmt.group_variants) > 1 else {})}


def resolve(config: BuildConfig, target) -> ResolvedBuild:
    """What `config` means on `target` (validated first); one line on the first thing that does not build."""
    from edgekit.targets.plan import vision_precision_for

    config.validate()
    backend = config.backend or target.default_backend(config.precision)
    if backend not in target.backends:
        raise EdgekitError(f"target {target.name} has no {backend!r} backend; it supports {', '.join(target.backends)}")
    config = replace(config, method=config.method or default_method(config.precision, backend))
    decoder, calibration = config.decoder_format(backend), decoder_calibration(config, backend)
    vision = config.vision_precision or vision_precision_for(config.precision, target.family)
    scales = decoder is not None and (decoder.input_scale_range is not None or config.precision == "w8a8")
    return ResolvedBuild(
        config,
        target,
        backend,
        decoder,
        calibration,
        vision,
        needs_samples=config.method != "rtn" or vision == "int8" or scales,
    )
