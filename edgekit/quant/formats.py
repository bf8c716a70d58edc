"""Weight formats as values: the one place a format's name is read and its identity is kept.

A `Format` is everything edgekit knows about one way of storing a weight matrix, in one object: the grid its
codes live on (the maker in `edgekit.quant.grids` it names), its GGUF tensor type, file type and block packer
(`edgekit.quant.gguf_layout`), its ModelOpt unified layouts and their `quant_algo` (`edgekit.quant.modelopt_layout`),
how its runtime quantizes activations, its group size, its bytes per matrix, the backends that run it and the build
precisions (`--precision`) it is the decoder's format for. Adding a format is one entry in FORMATS plus the pieces
it names. The pieces live in torch modules and load on first use, so reading this table imports nothing heavy.
`parse` is the only function that reads a format from text; every other module takes a `Format`.

Spellings `parse` accepts: every name in FORMATS (the comments there say what each is), case and surrounding spaces
ignored; a bare GGUF type as llama.cpp spells it ("q4_k", "F16"); nvidia:w4a16 for group 128.

Byte counts are what the artifact holds (GGUF blocks from gguf's own size table; the unified
checkpoint's float32 scales), so the pre-build plan, `edgekit inspect`, mixed precision and the
writers agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import import_module
from math import prod

from edgekit.errors import EdgekitError

BACKENDS = ("gguf", "tensorrt")
WHOLE_ROW = 0  # group size of per-output-channel formats


@dataclass(frozen=True)
class Ref:
    """A piece of a format that lives in a module under edgekit.quant (they import torch): loaded on first use."""

    module: str
    name: str
    args: tuple = ()  # a grid maker's arguments after the format's name

    def load(self):
        return getattr(import_module(f"edgekit.quant.{self.module}"), self.name)


@dataclass(frozen=True)
class Format:
    name: str  # canonical spelling, e.g. "gguf:q4_k"
    container: str  # "gguf" (llama.cpp file) | "modelopt" (unified checkpoint)
    quantized: bool  # False: a float format, no grid
    bits: int  # bits per code (16/32 for float formats)
    group_size: int  # columns sharing one set of scales (GGUF: the block; 0: the whole row)
    ggml_type: str | None = None  # GGUF tensor type name ("Q4_K"); None outside GGUF
    gguf_file_type: int | None = None  # general.file_type (llama_ftype) of a file in this format
    backends: tuple[str, ...] = ("gguf",)
    precisions: tuple[str, ...] = ()  # the build precisions (--precision) whose decoder it is on its backends
    grid_maker: Ref | None = field(default=None, repr=False)  # grids.<maker>(name, *args)
    gguf_packer: Ref | None = field(default=None, repr=False)  # gguf_layout.pack_<type>(QuantizedWeight) -> bytes
    # ModelOpt unified Layouts (modelopt_layout): weights only, then with per-tensor input scales where both exist
    layouts: tuple[Ref, ...] = field(default=(), repr=False)
    scale_bits: int = 32  # unified checkpoint: bits of one group's scale (float32; NVFP4's E4M3: 8)
    # NVFP4: a linear's input scale is its activations' amax / this (6 · 448, ModelOpt's rule); calibrating the format
    # always records it (what TensorRT's W4A4 GEMM quantizes activations with). None: not the format's business
    input_scale_range: float | None = None
    tensor_scale_bytes: int = 0  # unified checkpoint: bytes of per-tensor weight scales (NVFP4's FP32 weight_scale_2)
    # (x, input_scale) -> x fake-quantized as the runtime quantizes activations; None: it does not quantize them
    activation_quantizer: Ref | None = field(default=None, repr=False)
    # the tensor-core arithmetic of its GEMMs (the plan's compute peak): fp16 where the weights are dequantized to the
    # activations' type; int8 (W8A8), fp8, fp4 (NVFP4 W4A4) where both operands are quantized
    compute: str = "fp16"

    @property
    def grid_name(self) -> str:
        """The name of the grid this format's codes live on: the format's own."""
        if not self.quantized:
            raise EdgekitError(f"{self.name} is a float format: there is no grid to quantize on")
        return self.name

    @property
    def grid(self):
        """The format's Grid (edgekit.quant.grids), made once."""
        if self.grid_maker is None:
            raise EdgekitError(f"{self.name} is a float format: there is no grid to quantize on")
        if self.name not in _GRIDS:
            _GRIDS[self.name] = self.grid_maker.load()(self.name, *self.grid_maker.args)
        return _GRIDS[self.name]

    @property
    def type_name(self) -> str:
        """The format's name inside its container: "q4_k", "f16", "w4a16:g128", "channel"."""
        return self.name.split(":", 1)[1]

    def pack_gguf(self, qw):
        """QuantizedWeight on this format's grid -> ggml blocks, uint8 [out, row bytes]."""
        if self.gguf_packer is None:
            raise EdgekitError(f"format {self.name} has no GGUF block layout")
        return self.gguf_packer.load()(qw)

    def unified_layout(self, activation_scales: bool = False):
        """The ModelOpt Layout (edgekit.quant.modelopt_layout) of a unified checkpoint in this format."""
        if not self.layouts:
            raise EdgekitError(
                f"format {self.name} has no ModelOpt unified form; use one of "
                f"{', '.join(n for n, f in FORMATS.items() if f.layouts)}"
            )
        return self.layouts[min(len(self.layouts) - 1, int(activation_scales))].load()

    def unified_algo(self, activation_scales: bool = False) -> str:
        """ModelOpt quant_algo of a unified checkpoint in this format."""
        return self.unified_layout(activation_scales).algo

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

    @property
    def group_variants(self) -> dict[int, "Format"]:
        """The same format at each group size it comes in, by group size (W4A16: 32, 64, 128; others: their own)."""
        same = [f for f in FORMATS.values() if self.layouts and f.layouts == self.layouts]
        return {f.group_size: f for f in same} or {self.group_size: self}

    def with_group_size(self, group_size: int) -> "Format":
        """The same format at another group size (W4A16 only: its groups are 32, 64 or 128 columns)."""
        variants = self.group_variants
        if group_size not in variants:
            sizes = ", ".join(map(str, variants))
            raise EdgekitError(f"--group-size {group_size}: format {self.name} has groups of {sizes} columns")
        return variants[group_size]

    @property
    def quantizes_activations(self) -> bool:
        """Whether a runtime can quantize this format's activations under a calibrated per-tensor scale (W8A8 INT8,
        FP8, NVFP4): where SmoothQuant's migration applies."""
        return self.activation_quantizer is not None

    def activation_qdq(self, x, input_scale):
        """x fake-quantized as the runtime quantizes this format's activations under their per-tensor scale: NVFP4's
        E2M1 blocks, FP8's E4M3, INT8 for W8A8 (SmoothQuant on int8:channel)."""
        if self.activation_quantizer is None:
            raise EdgekitError(f"{self.name}: its runtime does not quantize activations")
        return self.activation_quantizer.load()(x, input_scale)

    def runs_on(self, backend: str) -> bool:
        return backend in self.backends

    def __str__(self) -> str:
        return self.name


_GRIDS: dict[str, object] = {}  # format name -> its Grid, made on first use


def gguf_block(ggml_type: str) -> tuple[int, int]:
    """(weights per block, bytes per block) from the gguf package's own table."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]


# ---- the formats --------------------------------------------------------------------------------------------------


def _grid(maker: str, *args) -> Ref:
    return Ref("grids", maker, args)


def _layouts(*names: str) -> tuple[Ref, ...]:
    return tuple(Ref("modelopt_layout", n) for n in names)


def _gguf(
    type_name: str, bits: int, group: int, file_type: int, precisions: tuple[str, ...] = (), grid: Ref | None = None
) -> Format:
    """A GGUF type: a float one without a grid, a quantized one with its grid and its packer, pack_<type>."""
    parts = {"grid_maker": grid, "gguf_packer": Ref("gguf_layout", f"pack_{type_name}") if grid is not None else None}
    return Format(
        f"gguf:{type_name}",
        "gguf",
        grid is not None,
        bits,
        group,
        type_name.upper(),
        file_type,
        precisions=precisions,
        **parts,
    )


def _w4a16(group: int, precisions: tuple[str, ...] = ()) -> Format:
    parts = {"precisions": precisions, "grid_maker": _grid("w4a16", group), "layouts": _layouts("INT4_AWQ")}
    return Format(f"nvidia:w4a16:g{group}", "modelopt", True, 4, group, backends=("tensorrt",), **parts)


# llama_ftype values from llama.h: ALL_F32 0, MOSTLY_F16 1, Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q5_1 9, Q4_K_S 14, Q5_K_S 16,
# Q6_K 18, BF16 32, MXFP4_MOE 38, NVFP4 39 (a file whose every matrix is one K-quant type is the _S variant).
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        _gguf("f32", 32, 1, 0, ("fp32",)),
        _gguf("f16", 16, 1, 1, ("fp16",)),
        _gguf("bf16", 16, 1, 32),
        _gguf("q8_0", 8, 32, 7, ("int8", "w8a8"), _grid("q8_0")),
        _gguf("q4_0", 4, 32, 2, grid=_grid("q4_0")),
        _gguf("q4_1", 4, 32, 3, grid=_grid("q4_1")),
        _gguf("q5_0", 5, 32, 8, grid=_grid("q5_0")),
        _gguf("q5_1", 5, 32, 9, grid=_grid("q5_1")),
        _gguf("q4_k", 4, 256, 14, ("int4",), _grid("kquant_min", "q4_k", 15, -1.0, 20)),
        _gguf("q5_k", 5, 256, 16, grid=_grid("kquant_min", "q5_k", 31, -0.5, 15)),
        _gguf("q6_k", 6, 256, 18, grid=_grid("q6_k")),
        _gguf("mxfp4", 4, 32, 38, ("mxfp4",), _grid("mxfp4")),
        _gguf("nvfp4", 4, 64, 39, ("nvfp4",), _grid("nvfp4")),
        # ModelOpt W4A16_AWQ: symmetric INT4 codes, one fp16-representable scale per group (--group-size picks it)
        _w4a16(32),
        _w4a16(64),
        _w4a16(128, ("int4",)),
        # per-output-channel symmetric INT8: W8A16 weights only, W8A8 with SmoothQuant's calibrated input scales
        Format(
            "int8:channel",
            "modelopt",
            True,
            8,
            WHOLE_ROW,
            backends=("tensorrt",),
            precisions=("w8a8",),
            grid_maker=_grid("int8_channel"),
            layouts=_layouts("INT8_WEIGHT_ONLY", "INT8_SMOOTHQUANT"),
            activation_quantizer=Ref("smoothquant", "fake_quant_activation"),
            compute="int8",
        ),
        # E2M1 codes, an E4M3 scale per 16 columns, an FP32 scale per tensor; activations in E2M1 blocks of 16 (W4A4)
        Format(
            "nvidia:nvfp4",
            "modelopt",
            True,
            4,
            16,
            backends=("tensorrt",),
            precisions=("nvfp4",),
            grid_maker=_grid("modelopt_nvfp4"),
            layouts=_layouts("NVFP4_WEIGHT_ONLY", "NVFP4_W4A4"),
            scale_bits=8,
            input_scale_range=6 * 448.0,
            tensor_scale_bytes=4,
            activation_quantizer=Ref("fp4", "modelopt_activation_qdq"),
            compute="fp4",
        ),
        # E4M3 weights under one scale per tensor, E4M3 activations under a calibrated one (W8A8)
        Format(
            "nvidia:fp8",
            "modelopt",
            True,
            8,
            WHOLE_ROW,
            backends=("tensorrt",),
            precisions=("fp8",),
            grid_maker=_grid("modelopt_fp8"),
            layouts=_layouts("FP8_W8A8"),
            scale_bits=0,
            input_scale_range=448.0,
            tensor_scale_bytes=4,
            activation_quantizer=Ref("fp8", "activation_qdq"),
            compute="fp8",
        ),
    )
}
ALIASES = {
    "nvidia:w4a16": "nvidia:w4a16:g128",
    **{f.ggml_type.lower(): f.name for f in FORMATS.values() if f.container == "gguf"},
}
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
        raise EdgekitError(
            f"unknown format {text!r}; choose one of {', '.join(FORMATS)} "
            "(nvidia:w4a16 means group 128; a bare GGUF type such as q4_k means gguf:q4_k)"
        )
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


@cache
def unified_layouts() -> dict:
    """quant_algo -> Layout of every unified form edgekit reads and writes, in the formats' order (made once: the
    reader asks it for every linear)."""
    return {layout.algo: layout for f in FORMATS.values() for layout in (r.load() for r in f.layouts)}


def from_unified(quant_algo: str, group_size: int) -> Format:
    """The Format a ModelOpt unified checkpoint's hf_quant_config.json describes."""
    layouts = unified_layouts()
    if quant_algo not in layouts:
        raise EdgekitError(f"quant_algo {quant_algo!r} is not one edgekit reads ({', '.join(layouts)})")
    stored_in = [f for f in FORMATS.values() if layouts[quant_algo] in (r.load() for r in f.layouts)]
    fmt = stored_in[0]
    return fmt.with_group_size(group_size) if len(fmt.group_variants) > 1 else fmt
