"""Formats as values: one parser, identities checked against the gguf package's and llama.cpp's own tables."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import require
from edgekit.errors import EdgekitError
from edgekit.quant import formats as F
from edgekit.quant import modelopt_layout as L
from edgekit.quant.grids import get_grid
from edgekit.quant.precisions import BUILD_PRECISIONS, decoder_format

gguf = require("gguf")


def test_every_spelling_parses_to_one_canonical_format():
    for name, fmt in F.FORMATS.items():
        assert F.parse(name) is fmt and F.parse(f"  {name.upper()} ") is fmt and F.parse(fmt) is fmt
    assert F.parse("nvidia:w4a16").name == "nvidia:w4a16:g128"
    assert F.parse("Q4_K") is F.parse("q4_k") is F.parse("gguf:q4_k")
    assert F.parse_list("gguf:q4_k, q8_0,gguf:q4_k,") == [F.parse("gguf:q4_k"), F.parse("gguf:q8_0")]
    for bad in ("q3_k", "nvidia:w4a16:g48", "gguf:", "", "int4"):
        with pytest.raises(EdgekitError, match="choose one of"):
            F.parse(bad)


def test_gguf_identity_matches_the_gguf_package():
    for name in F.GGUF_FORMATS:
        fmt = F.parse(name)
        qtype = gguf.GGMLQuantizationType[fmt.ggml_type]
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        assert fmt.bits_per_weight == size * 8 / block
        assert fmt.nbytes((3, 4 * 256)) == 3 * 4 * 256 // block * size
        assert F.by_ggml_type(fmt.ggml_type) is fmt
        # general.file_type as llama.cpp names it (gguf.LlamaFileType mirrors llama.h's llama_ftype)
        ftype = {
            "F32": "ALL_F32",
            "F16": "MOSTLY_F16",
            "BF16": "MOSTLY_BF16",
            "Q8_0": "MOSTLY_Q8_0",
            "Q4_0": "MOSTLY_Q4_0",
            "Q4_1": "MOSTLY_Q4_1",
            "Q5_0": "MOSTLY_Q5_0",
            "Q5_1": "MOSTLY_Q5_1",
            "Q4_K": "MOSTLY_Q4_K_S",
            "Q5_K": "MOSTLY_Q5_K_S",
            "Q6_K": "MOSTLY_Q6_K",
            "MXFP4": "MOSTLY_MXFP4_MOE",
            "NVFP4": "MOSTLY_NVFP4",
        }[fmt.ggml_type]
        assert fmt.gguf_file_type == int(gguf.LlamaFileType[ftype]), name
        if fmt.quantized:
            assert fmt.group_size == block == get_grid(fmt).block_for(block)


def test_every_format_is_one_object_with_all_its_parts():
    """Each format carries its own grid, GGUF packer and unified layouts (no table elsewhere keyed by its name):
    a quantized format makes its grid under its name, a GGUF one packs, a ModelOpt one has a layout per quant_algo."""
    for name in F.QUANTIZED_FORMATS:
        fmt, grid = F.parse(name), get_grid(name)
        assert grid is fmt.grid and grid.name == fmt.grid_name == name and grid.bits == fmt.bits
        assert (fmt.gguf_packer is not None) == (fmt.container == "gguf") == (not fmt.layouts)
        if fmt.container == "gguf":
            assert callable(fmt.gguf_packer.load())
        else:
            assert grid.block == fmt.group_size and all(isinstance(r.load(), L.Layout) for r in fmt.layouts)
    assert get_grid("nvidia:w4a16") is F.parse("nvidia:w4a16:g128").grid
    for float_format in ("gguf:f16", "gguf:f32", "gguf:bf16"):
        with pytest.raises(EdgekitError, match="float format"):
            _ = F.parse(float_format).grid
    with pytest.raises(EdgekitError, match="no GGUF block layout"):
        F.parse("nvidia:fp8").pack_gguf(None)
    # every quant_algo is stored by exactly one family of formats, and reading it back gives that format
    algos = F.unified_layouts()
    assert set(algos) == {L.W4A16, L.W8A8, L.W8A16, L.NVFP4, L.W4A16_NVFP4, L.FP8}
    for algo in algos:
        fmt = F.from_unified(algo, 128)
        assert algo in {fmt.unified_algo(False), fmt.unified_algo(True)}


def test_precisions_come_from_the_formats_that_serve_them():
    """Every build precision is served by a format on some backend; each (precision, backend) resolves to at most one
    format (or to the FP16 checkpoint); the recipes list only precisions that build."""
    from edgekit.quant.precisions import builds_on
    from edgekit.targets import all_targets

    for precision in BUILD_PRECISIONS:
        assert any(builds_on(precision, b) for b in F.BACKENDS), precision
        for backend in F.BACKENDS:
            serving = [f for f in F.FORMATS.values() if backend in f.backends and precision in f.precisions]
            assert len({f.group_variants[min(f.group_variants)] for f in serving}) <= 1, (precision, backend)
    for target in all_targets().values():
        for precision in target.precisions:
            assert any(builds_on(precision, b) for b in target.backends), (target.name, precision)


def test_modelopt_identity_and_bytes():
    w4 = F.parse("nvidia:w4a16:g64")
    assert w4.unified_algo() == L.W4A16 and w4.group_size == 64 and w4.bits_per_weight == 4 + 32 / 64
    assert w4.nbytes((8, 256)) == 8 * 256 // 2 + 8 * (256 // 64) * 4  # packed nibbles + float32 scales
    assert F.from_unified(L.W4A16, 64) is w4 and w4.with_group_size(32).name == "nvidia:w4a16:g32"
    i8 = F.parse("int8:channel")
    assert i8.unified_algo(activation_scales=True) == L.W8A8 and i8.unified_algo() == L.W8A16
    assert i8.nbytes((8, 96)) == 8 * 96 + 8 * 4
    fp8 = F.parse("nvidia:fp8")  # one byte per weight, one FP32 scale per tensor
    assert fp8.nbytes((8, 96)) == 8 * 96 + 4 and fp8.bits_per_weight == 8 and F.from_unified(L.FP8, 0) is fp8
    with pytest.raises(EdgekitError, match="no ModelOpt unified form"):
        F.parse("gguf:q4_k").unified_algo()
    with pytest.raises(EdgekitError, match="groups of 256 columns"):
        F.parse("gguf:q4_k").with_group_size(64)


def test_build_precision_table():
    d = decoder_format
    assert [d(p, "gguf").name for p in ("fp32", "fp16", "int8", "w8a8", "int4")] == [
        "gguf:f32",
        "gguf:f16",
        "gguf:q8_0",
        "gguf:q8_0",
        "gguf:q4_k",
    ]
    assert d("int4", "gguf", gguf_type="q4_0").name == "gguf:q4_0"
    assert d("int4", "tensorrt").name == "nvidia:w4a16:g128" and d("int4", "tensorrt", group_size=32).group_size == 32
    assert d("w8a8", "tensorrt").name == "int8:channel" and d("fp16", "tensorrt") is None
    with pytest.raises(EdgekitError, match="no INT8 weight-only path"):
        d("int8", "tensorrt")
    with pytest.raises(EdgekitError, match="--gguf-type"):
        d("int4", "gguf", gguf_type="nvidia:w4a16")
    assert d("fp8", "tensorrt").unified_algo() == L.FP8 == d("fp8", "tensorrt").unified_algo(activation_scales=True)
    with pytest.raises(EdgekitError, match="no FP8 weight type"):
        d("fp8", "gguf")


def test_gguf_storage_rule_is_the_writers(tiny_ckpt):
    """Format.gguf_storage and nbytes give exactly the tensor table the GGUF writer plans, for every type."""
    from edgekit.export.gguf import decoder_tensor_plan
    from edgekit.model.checkpoint import open_checkpoint

    ck = open_checkpoint(tiny_ckpt)
    for name in F.GGUF_FORMATS:
        fmt = F.parse(name)
        for p in decoder_tensor_plan(ck, fmt):
            stored = fmt.gguf_storage(p.shape)
            assert (stored.ggml_type, stored.nbytes(p.shape)) == (p.ggml_type, p.nbytes), (name, p.gguf_name)
    assert F.parse("gguf:q4_k").gguf_storage((5,)).name == "gguf:f32"
    assert F.parse("gguf:q4_k").gguf_storage((4, 100)).name == "gguf:f16"  # rows not whole 256-blocks
    assert np.isclose(F.parse("gguf:q6_k").bits_per_weight, 6.5625)


def test_modelopt_nbytes_is_the_layouts_tensors():
    """A unified format's bytes per linear are what its Layout writes beside the input scale (NVFP4: packed
    nibbles, E4M3 block scales and the FP32 per-tensor scale)."""
    for fmt in F.FORMATS.values():
        if fmt.container != "modelopt":
            continue
        for algo in {fmt.unified_algo(False), fmt.unified_algo(True)}:
            layout = F.unified_layouts()[algo]
            group = layout.fixed_group or (fmt.group_size if fmt.group_size else 1)
            shape = (48, 256)
            assert fmt.nbytes(shape) == sum(layout.nbytes(*shape, group).values()), (fmt.name, algo)
