"""Weight formats as values: the one place a format's name is read and its identity is kept.

A `Format` says everything the rest of edgekit needs about one way of storing a weight matrix: the
quantization grid its codes live on (`edgekit.quant.grids`), its GGUF tensor type and file type, its
ModelOpt unified `quant_algo`, its group size, its bytes per matrix and which bundle backends run it.
`parse` is the only function that reads a format from text; every other module takes a `Format`.

Spellings `parse` accepts (case and surrounding spaces ignored):
  gguf:f32 gguf:f16 gguf:bf16 gguf:q8_0 gguf:q4_0 gguf:q4_1 gguf:q5_0 gguf:q4_k gguf:q5_k gguf:q6_k gguf:mxfp4 gguf:nvfp4
      (or the bare GGUF type, "q4_k", "F16", as llama.cpp spells it)
  nvidia:w4a16:g32 | :g64 | :g128  (nvidia:w4a16 = group 128): ModelOpt W4A16_AWQ, symmetric INT4
  int8:channel: per-output-channel symmetric INT8 (ModelOpt W8A8_SQ_PER_CHANNEL with SmoothQuant
      activation scales, W8A16 without)
  nvidia:nvfp4: ModelOpt NVFP4: E2M1 codes, an E4M3 scale per 16 columns, an FP32 scale per tensor (W4A16_NVFP4
      weight-only; NVFP4 with per-tensor activation scales)
  nvidia:fp8: ModelOpt FP8: E4M3 weights under one scale per tensor, E4M3 activations under a calibrated one (W8A8)

Byte counts are what the artifact holds (GGUF blocks from gguf's own size table; the unified
checkpoint's float32 scales), so the pre-build plan, `edgekit inspect`, mixed precision and the
writers agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from edgekit.errors import EdgekitError

W4A16_AWQ, W8A8_SQ, W8A16 = "W4A16_AWQ", "W8A8_SQ_PER_CHANNEL", "W8A16"  # ModelOpt quant_algo values
NVFP4, W4A16_NVFP4, FP8 = "NVFP4", "W4A16_NVFP4", "FP8"
# quant_algo of a unified checkpoint whose format depends on whether activation scales were calibrated:
# (weights only, with a per-tensor input_scale per linear)
_ACTIVATION_ALGOS = {"int8:channel": (W8A16, W8A8_SQ), "nvidia:nvfp4": (W4A16_NVFP4, NVFP4)}
BACKENDS = ("gguf", "tensorrt")
# activation value set -> the fake quantization the runtime's matches (module, function): (x, input_scale) -> x
_ACTIVATION_QDQ = {"int8": ("edgekit.quant.smoothquant", "fake_quant_activation"),  # W8A8 SmoothQuant
                   "e2m1": ("edgekit.quant.fp4", "modelopt_activation_qdq"),  # NVFP4: blocks of 16 under E4M3 scales
                   "e4m3": ("edgekit.quant.fp8", "activation_qdq")}
WHOLE_ROW = 0  # group size of per-output-channel formats


@dataclass(frozen=True)
class Format:
    name: str  # canonical spelling, e.g. "gguf:q4_k"
    container: str  # "gguf" (llama.cpp file) | "modelopt" (unified checkpoint)
    quantized: bool  # False: a float format, no grid
    bits: int  # bits per code (16/32 for float formats)
    group_size: int  # columns sharing one set of scales (GGUF: the block; 0: the whole row)
    ggml_type: str | None = None  # GGUF tensor type name ("Q4_K"); None outside GGUF
    gguf_file_type: int | None = None  # general.file_type (llama_ftype) of a file in this format
    quant_algo: str | None = None  # ModelOpt unified quant_algo; None: it depends on activation scales
    backends: tuple[str, ...] = ("gguf",)
    scale_bits: int = 32  # unified checkpoint: bits of one group's scale (float32; NVFP4's E4M3: 8)
    # NVFP4: a linear's input scale is its activations' amax / this (6 · 448, ModelOpt's rule); calibrating the format
    # always records it (what TensorRT's W4A4 GEMM quantizes activations with). None: not the format's business
    input_scale_range: float | None = None
    tensor_scale_bytes: int = 0  # unified checkpoint: bytes of per-tensor weight scales (NVFP4's FP32 weight_scale_2)
    # how the runtime quantizes activations under a calibrated per-tensor scale (_ACTIVATION_QDQ); None: it does not
    activations: str | None = None

    @property
    def grid_name(self) -> str:
        """The grid (edgekit.quant.grids) whose codes this format stores; its name is the format's."""
        if not self.quantized:
            raise EdgekitError(f"{self.name} is a float format: there is no grid to quantize on")
        return self.name

    @property
    def grid(self):
        from edgekit.quant.grids import get_grid

        return get_grid(self.grid_name)

    @property
    def type_name(self) -> str:
        """The format's name inside its container: "q4_k", "f16", "w4a16:g128", "channel"."""
        return self.name.split(":", 1)[1]

    def unified_algo(self, activation_scales: bool = False) -> str:
        """ModelOpt quant_algo of a unified checkpoint in this format."""
        if self.container != "modelopt":
            raise EdgekitError(f"format {self.name} has no ModelOpt unified form; use nvidia:w4a16[:gN] "
                               "(W4A16_AWQ), int8:channel (W8A8 SmoothQuant, or W8A16) or nvidia:nvfp4")
        if self.quant_algo is not None:
            return self.quant_algo
        return _ACTIVATION_ALGOS[self.name][1 if activation_scales else 0]

    @property
    def bits_per_weight(self) -> float:
        """Storage bits per weight of a matrix whose rows are whole groups, scales included."""
        if self.container == "gguf":
            block, size = gguf_block(self.ggml_type)
            return size * 8 / block
        if self.group_size == WHOLE_ROW:
            return float(self.bits)  # one scale per row: negligible per weight
        return self.bits + self.scale_bits / self.group_size  # one scale per group in the unified checkpoint

    def fits_rows(self, columns: int) -> bool:
        """A row of `columns` splits into whole groups of this format."""
        if self.container == "gguf":
            return columns % gguf_block(self.ggml_type)[0] == 0
        return self.group_size == WHOLE_ROW or columns % self.group_size == 0

    def gguf_storage(self, shape: tuple[int, ...]) -> "Format":
        """The format a GGUF writer gives one tensor: vectors F32 (llama.cpp adds them in f32); a matrix
        this format when its rows split into whole blocks, else F16 (as llama.cpp's converter does)."""
        if len(shape) < 2:
            return FORMATS["gguf:f32"]
        return self if self.fits_rows(shape[-1]) else FORMATS["gguf:f16"]

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Bytes one tensor of `shape` ([out, in], numpy order) takes in this format."""
        n = prod(shape)
        if self.container == "gguf":
            block, size = gguf_block(self.ggml_type)
            return n // block * size
        if not self.quantized:
            return n * self.bits // 8
        rows, cols = shape
        groups = 1 if self.group_size == WHOLE_ROW else cols // self.group_size
        return n * self.bits // 8 + rows * groups * self.scale_bits // 8 + self.tensor_scale_bytes  # codes + scales

    def with_group_size(self, group_size: int) -> "Format":
        """The same format at another group size (W4A16 only: its groups are 32, 64 or 128 columns)."""
        if group_size == self.group_size:
            return self
        if self.quant_algo != W4A16_AWQ:
            raise EdgekitError(f"--group-size {group_size}: format {self.name} has a fixed group size ({self.group_size})")
        if f"nvidia:w4a16:g{group_size}" not in FORMATS:
            raise EdgekitError(f"--group-size {group_size}: nvidia:w4a16 groups are 32, 64 or 128 columns")
        return FORMATS[f"nvidia:w4a16:g{group_size}"]

    @property
    def quantizes_activations(self) -> bool:
        """Whether a runtime can quantize this format's activations under a calibrated per-tensor scale (W8A8 INT8,
        FP8, NVFP4): where SmoothQuant's migration applies."""
        return self.activations is not None

    def activation_qdq(self, x, input_scale):
        """x fake-quantized as the runtime quantizes this format's activations under their per-tensor scale: NVFP4's
        E2M1 blocks, FP8's E4M3, INT8 for W8A8 (SmoothQuant on int8:channel)."""
        from importlib import import_module

        if self.activations is None:
            raise EdgekitError(f"{self.name}: its runtime does not quantize activations")
        module, function = _ACTIVATION_QDQ[self.activations]
        return getattr(import_module(module), function)(x, input_scale)

    def runs_on(self, backend: str) -> bool:
        return backend in self.backends

    def __str__(self) -> str:
        return self.name


def gguf_block(ggml_type: str) -> tuple[int, int]:
    """(weights per block, bytes per block) from the gguf package's own table."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]


def _gguf(type_name: str, bits: int, group: int, file_type: int, quantized: bool = True) -> Format:
    return Format(f"gguf:{type_name}", "gguf", quantized, bits, group, type_name.upper(), file_type)


def _w4a16(group: int) -> Format:
    return Format(f"nvidia:w4a16:g{group}", "modelopt", True, 4, group, quant_algo=W4A16_AWQ, backends=("tensorrt",))


# llama_ftype values from llama.h: ALL_F32 0, MOSTLY_F16 1, Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q4_K_S 14, Q5_K_S 16,
# Q6_K 18, BF16 32, MXFP4_MOE 38, NVFP4 39 (a file whose every matrix is one K-quant type is the _S variant).
FORMATS: dict[str, Format] = {f.name: f for f in (
    _gguf("f32", 32, 1, 0, quantized=False),
    _gguf("f16", 16, 1, 1, quantized=False),
    _gguf("bf16", 16, 1, 32, quantized=False),
    _gguf("q8_0", 8, 32, 7),
    _gguf("q4_0", 4, 32, 2),
    _gguf("q4_1", 4, 32, 3),
    _gguf("q5_0", 5, 32, 8),
    _gguf("q4_k", 4, 256, 14),
    _gguf("q5_k", 5, 256, 16),
    _gguf("q6_k", 6, 256, 18),
    _gguf("mxfp4", 4, 32, 38),
    _gguf("nvfp4", 4, 64, 39),
    _w4a16(32), _w4a16(64), _w4a16(128),
    Format("int8:channel", "modelopt", True, 8, WHOLE_ROW, backends=("tensorrt",), activations="int8"),
    Format("nvidia:nvfp4", "modelopt", True, 4, 16, backends=("tensorrt",), scale_bits=8, input_scale_range=6 * 448.0,
           tensor_scale_bytes=4, activations="e2m1"),
    Format("nvidia:fp8", "modelopt", True, 8, WHOLE_ROW, quant_algo=FP8, backends=("tensorrt",), scale_bits=0,
           input_scale_range=448.0, tensor_scale_bytes=4, activations="e4m3"),
)}
ALIASES = {"nvidia:w4a16": "nvidia:w4a16:g128",
           **{f.ggml_type.lower(): f.name for f in FORMATS.values() if f.container == "gguf"}}
_BY_GGML_TYPE = {f.ggml_type: f for f in FORMATS.values() if f.container == "gguf"}
GGUF_FORMATS = tuple(n for n, f in FORMATS.items() if f.container == "gguf")
QUANTIZED_FORMATS = tuple(n for n, f in FORMATS.items() if f.quantized)


def parse(text: "str | Format") -> Format:
    """The Format a name stands for (a Format passes through); one line naming the choices otherwise."""
    if isinstance(text, Format):
        return text
    key = str(text).strip().lower()
    fmt = FORMATS.get(ALIASES.get(key, key))
    if fmt is None:
        raise EdgekitError(f"unknown format {text!r}; choose one of {', '.join(FORMATS)} "
                           "(nvidia:w4a16 means group 128; a bare GGUF type such as q4_k means gguf:q4_k)")
    return fmt


def by_ggml_type(ggml_type: str) -> Format:
    """The GGUF format of a GGUF tensor type name as the file stores it ("Q4_K", "F16")."""
    fmt = _BY_GGML_TYPE.get(ggml_type)
    if fmt is None:
        raise EdgekitError(f"GGUF tensor type {ggml_type!r} is not one edgekit writes ({', '.join(_BY_GGML_TYPE)})")
    return fmt


def parse_list(text: str) -> list[Format]:
    """'gguf:q4_k, gguf:q8_0' -> Formats, in order, without repeats."""
    out: list[Format] = []
    for part in str(text).split(","):
        if part.strip() and parse(part) not in out:
            out.append(parse(part))
    return out


def from_unified(quant_algo: str, group_size: int) -> Format:
    """The Format a ModelOpt unified checkpoint's hf_quant_config.json describes."""
    if quant_algo == W4A16_AWQ:
        return parse(f"nvidia:w4a16:g{group_size}")
    for fmt in FORMATS.values():
        if fmt.quant_algo == quant_algo:
            return fmt
    for name, algos in _ACTIVATION_ALGOS.items():
        if quant_algo in algos:
            return FORMATS[name]
    known = dict.fromkeys([*(f.quant_algo for f in FORMATS.values() if f.quant_algo),
                           *(a for algos in _ACTIVATION_ALGOS.values() for a in algos)])
    raise EdgekitError(f"quant_algo {quant_algo!r} is not one edgekit reads ({', '.join(known)})")


# ---- build precision -> decoder format: the one table ---------------------------------------------

BUILD_PRECISIONS = ("fp32", "fp16", "int8", "w8a8", "int4", "fp8", "nvfp4", "mxfp4")
_GGUF_FOR_PRECISION = {"fp32": "gguf:f32", "fp16": "gguf:f16", "int8": "gguf:q8_0", "w8a8": "gguf:q8_0",
                       "int4": "gguf:q4_k", "nvfp4": "gguf:nvfp4", "mxfp4": "gguf:mxfp4"}


def decoder_format(precision: str, backend: str, *, group_size: int = 128, gguf_type: str | None = None) -> Format | None:
    """The decoder's weight format for a build precision on a backend (None: the FP16 checkpoint as it is).

    gguf: int4 -> Q4_K, int8/w8a8 -> Q8_0, nvfp4/mxfp4 -> llama.cpp's NVFP4/MXFP4, fp16/fp32 -> F16/F32
    (`gguf_type` overrides);
    tensorrt: int4 -> W4A16 at `group_size`, w8a8 -> INT8 per channel with SmoothQuant, nvfp4 -> ModelOpt NVFP4
    (W4A4, calibrated input scales), fp8 -> ModelOpt FP8 (W8A8 E4M3, per-tensor scales), fp16 -> none.
    """
    if precision not in BUILD_PRECISIONS:
        raise EdgekitError(f"--precision {precision!r}: choose one of {', '.join(BUILD_PRECISIONS)}")
    if backend == "gguf":
        if precision == "fp8" and not gguf_type:
            raise EdgekitError("--precision fp8 is ModelOpt's FP8 for TensorRT (--backend tensorrt): llama.cpp has no "
                               "FP8 weight type (for a GGUF at 8 bits use --precision int8: Q8_0)")
        if not gguf_type:
            return FORMATS[_GGUF_FOR_PRECISION[precision]]
        fmt = FORMATS.get(ALIASES.get(str(gguf_type).strip().lower(), ""))
        if fmt is None or fmt.container != "gguf":
            raise EdgekitError(f"--gguf-type {gguf_type!r}: choose one of {', '.join(FORMATS[n].type_name for n in GGUF_FORMATS)}")
        return fmt
    if backend != "tensorrt":
        raise EdgekitError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if precision in ("fp16", "fp32"):
        return None
    if precision == "int8":
        raise EdgekitError("--backend tensorrt has no INT8 weight-only path (TensorRT Edge-LLM runs INT8 as "
                           "W8A8 SmoothQuant): use --precision w8a8, or int4")
    if precision == "w8a8":
        return FORMATS["int8:channel"]
    if precision == "nvfp4":
        return FORMATS["nvidia:nvfp4"]
    if precision == "fp8":
        return FORMATS["nvidia:fp8"]
    if precision == "mxfp4":
        raise EdgekitError("--precision mxfp4 builds llama.cpp's MXFP4 (--backend gguf); TensorRT Edge-LLM runs NVFP4 "
                           "(--precision nvfp4), not MXFP4 weights")
    return parse(f"nvidia:w4a16:g{group_size}")


def builds_on(precision: str, backend: str) -> bool:
    """Whether a decoder at this build precision can be written for `backend`."""
    try:
        decoder_format(precision, backend)
    except EdgekitError:
        return False
    return True


# `edgekit quantize --precision`: the formats a standalone quantization defaults to (llama.cpp's 4-bit K-quant;
# ModelOpt's INT8 per channel, which SmoothQuant turns into W8A8).
QUANTIZE_PRECISIONS = {"int4": "gguf:q4_k", "int8": "int8:channel"}


def quantize_format(precision: str, fmt: str = "", group_size: int | None = None) -> Format:
    """The format of `edgekit quantize`: --format when given, else --precision's; --group-size applied."""
    if not fmt and precision not in QUANTIZE_PRECISIONS:
        raise EdgekitError(f"--precision {precision!r}: choose {' or '.join(QUANTIZE_PRECISIONS)}, or give --format")
    out = parse(fmt or QUANTIZE_PRECISIONS[precision])
    if not out.quantized:
        raise EdgekitError(f"--format {out.name} is a float format: nothing to calibrate (use edgekit export-decoder)")
    return out if group_size is None or out.quant_algo != W4A16_AWQ else out.with_group_size(group_size)


def vision_format(precision: str) -> Format | None:
    """Weight format of the vision tower's linears in its ONNX graph (None: float, 2 or 4 bytes)."""
    return FORMATS["int8:channel"] if precision == "int8" else None
