"""Decoder / mmproj GGUF writers: metadata, tokenizer, exact tensor data, streaming, determinism.

Oracles: the gguf package's reader and dequantizers, llama.cpp's own quantizer (what an uncalibrated tensor must be,
called whole and on one thread), edgekit's grids (the error it must not exceed), the checkpoint's own tensors, and
llama.cpp's tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc
import zlib

import numpy as np
import pytest

from conftest import require
import torch

gguf = require("gguf")

from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.quant import formats as F  # noqa: E402
from edgekit.export.gguf import (  # noqa: E402
    TensorPlan,
    decoder_tensor_plan,
    read_tensor,
    storage_type,
    tensor_bytes,
    tensor_chunks,
    rtn_block_bytes,
    write_decoder_gguf,
    write_gguf_streamed,
)
from edgekit.export.mmproj import window_attention_pattern, write_mmproj_gguf  # noqa: E402
from edgekit.model.checkpoint import open_checkpoint  # noqa: E402

# every quantized GGUF type in the registry: a new format is tested here without a line added
QUANT_TYPES = tuple(F.FORMATS[n].type_name for n in F.GGUF_FORMATS if F.FORMATS[n].quantized)


def _fields(path) -> dict:
    r = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in r.fields.items()}


@pytest.fixture(scope="module")
def tiny_f32(tiny_ckpt, tmp_path_factory):
    return write_decoder_gguf(tiny_ckpt, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf", "f32")


def test_metadata_comes_from_the_checkpoint(tiny_ckpt, tiny_f32):
    ckpt = open_checkpoint(tiny_ckpt)
    t = ckpt.text
    kv = _fields(tiny_f32)
    assert kv["general.architecture"] == "qwen2vl"
    assert kv["qwen2vl.block_count"] == t.num_layers
    assert kv["qwen2vl.embedding_length"] == t.hidden
    assert kv["qwen2vl.feed_forward_length"] == t.intermediate
    assert kv["qwen2vl.attention.head_count"] == t.heads
    assert kv["qwen2vl.attention.head_count_kv"] == t.kv_heads
    assert kv["qwen2vl.context_length"] == t.max_position
    assert kv["qwen2vl.rope.dimension_sections"] == list(t.mrope_section) + [0]
    assert kv["qwen2vl.rope.freq_base"] == pytest.approx(t.rope_theta)
    assert kv["qwen2vl.attention.layer_norm_rms_epsilon"] == pytest.approx(t.rms_eps)
    tok = json.loads(ckpt.tokenizer_json.read_text())
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "qwen2"
    assert len(kv["tokenizer.ggml.tokens"]) == t.vocab
    assert len(kv["tokenizer.ggml.merges"]) == len(tok["model"]["merges"])
    for added in tok["added_tokens"]:
        assert kv["tokenizer.ggml.tokens"][added["id"]] == added["content"]
        assert kv["tokenizer.ggml.token_type"][added["id"]] == (3 if added["special"] else 4)
    assert kv["tokenizer.ggml.eos_token_id"] == ckpt.special_tokens["<|im_end|>"]
    assert kv["tokenizer.ggml.padding_token_id"] == ckpt.special_tokens["<|endoftext|>"]
    assert kv["tokenizer.chat_template"] == ckpt.chat_template


def test_f32_tensors_are_the_checkpoint_tensors(tiny_ckpt, tiny_f32):
    ckpt = open_checkpoint(tiny_ckpt)
    plan = decoder_tensor_plan(ckpt, "f32")
    assert len(plan) == len(list(gguf.GGUFReader(str(tiny_f32)).tensors))
    for p in plan:
        got = read_tensor(tiny_f32, p.gguf_name)
        np.testing.assert_array_equal(got, ckpt.get(p.source).float().numpy(), err_msg=p.gguf_name)


def _llama_quantize(w: torch.Tensor, ggml_type: str) -> np.ndarray:
    """llama.cpp's quantizer on the whole tensor in one call on one thread (the reference for the threaded writer)."""
    from edgekit.quant.ggml_quantize import quantize_rows

    return quantize_rows(w.float().numpy(), ggml_type, threads=1)


def _rms(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


@pytest.mark.parametrize("precision", ("f16", "bf16") + QUANT_TYPES)
def test_stored_values_are_exactly_what_was_meant(tiny_ckpt, tmp_path, precision):
    """Every uncalibrated tensor is byte for byte llama.cpp's own quantization of the weight (one thread, whole
    tensor), gguf's dequantizer reads it back, and its error is no worse than edgekit's grid search's."""
    from edgekit.quant.grids import dequantize_weight, fit_and_quantize

    out = write_decoder_gguf(tiny_ckpt, tmp_path / f"d-{precision}.gguf", precision)
    ckpt = open_checkpoint(tiny_ckpt)
    reader = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    rng = np.random.default_rng(zlib.crc32(precision.encode()))
    plan = decoder_tensor_plan(ckpt, precision)
    vectors = [p for p in plan if len(p.shape) == 1]
    matrices = [p for p in plan if len(p.shape) == 2]
    for p in vectors[:2] + [matrices[i] for i in rng.choice(len(matrices), 3, replace=False)]:
        t = reader[p.gguf_name]
        assert t.tensor_type.name == p.ggml_type
        got = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32).reshape(p.shape)
        w = ckpt.get(p.source).float()
        if p.ggml_type == "F32":
            want = w.numpy()
        elif p.ggml_type in ("F16", "BF16"):
            want = w.to(getattr(torch, {"F16": "float16", "BF16": "bfloat16"}[p.ggml_type])).float().numpy()
        else:
            np.testing.assert_array_equal(
                np.asarray(t.data).reshape(-1).view(np.uint8),
                _llama_quantize(w, p.ggml_type),
                err_msg=f"{precision} {p.gguf_name}",
            )
            grid = dequantize_weight(fit_and_quantize(f"gguf:{precision}", w)).numpy()
            assert _rms(got, w) <= 1.01 * _rms(grid, w), (precision, p.gguf_name, _rms(got, w), _rms(grid, w))
            continue
        np.testing.assert_array_equal(got, want, err_msg=f"{precision} {p.gguf_name}")


@pytest.mark.parametrize("precision", QUANT_TYPES)
def test_odd_shapes_and_fallbacks(tmp_path, precision):
    """Odd row counts, a row width that is no block multiple (stored F16 instead), zero and negative rows."""
    block = F.parse(precision).group_size
    g = torch.Generator().manual_seed(len(precision) * 7 + block)
    a = torch.randn(7, 3 * block, generator=g)
    a[1] = 0.0  # an all-zero row
    a[2] = -a[2].abs() * 50  # negative-only, large scale
    b = torch.randn(5, block + 3, generator=g)  # cannot be blocked
    c = torch.randn(13, generator=g)
    tensors = {"a.weight": a, "b.weight": b, "c.bias": c}
    plan = [TensorPlan(n, n, tuple(t.shape), storage_type(tuple(t.shape), precision)) for n, t in tensors.items()]
    assert [p.ggml_type for p in plan] == [precision.upper(), "F16", "F32"]
    out = write_gguf_streamed(
        tmp_path / "odd.gguf",
        "qwen2vl",
        lambda w: None,
        plan,
        lambda p: tensor_bytes(p, tensors[p.source], rtn_block_bytes),
    )
    ref = np.asarray(
        gguf.quants.dequantize(_llama_quantize(a, precision.upper()), gguf.GGMLQuantizationType[precision.upper()])
    ).reshape(a.shape)
    np.testing.assert_array_equal(read_tensor(out, "a.weight"), ref)
    np.testing.assert_array_equal(read_tensor(out, "a.weight")[1], 0.0)
    np.testing.assert_array_equal(read_tensor(out, "b.weight"), b.half().float().numpy())
    np.testing.assert_array_equal(read_tensor(out, "c.bias"), c.numpy())
    # Row blocks encode exactly like the whole tensor (the exporter bounds memory this way).
    for p in plan:
        whole = tensor_bytes(p, tensors[p.source], rtn_block_bytes)
        parts = [
            x.reshape(-1).view(np.uint8)
            for x in tensor_chunks(p, tensors[p.source], rtn_block_bytes, chunk_bytes=3 * 4 * p.shape[-1])
        ]
        assert len(parts) == -(-p.shape[0] // 3) or len(p.shape) == 1
        np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("ggml_type", ["Q4_K", "Q5_K"])
def test_llama_cpps_quantizer_takes_an_importance(ggml_type):
    """With an imatrix row, llama.cpp's own fit lowers the importance-weighted error against its plain RTN (the
    importance reaches it), threads change nothing, and an importance of the wrong length is one clear error."""
    from edgekit.quant.ggml_quantize import quantize_rows

    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    w = (torch.randn(19, 512, generator=gen) * (0.5 + torch.rand(1, 512, generator=gen))).numpy()
    imp = (torch.rand(512, generator=gen) ** 6 + 1e-4).numpy()
    kind = gguf.GGMLQuantizationType[ggml_type]

    def weighted_error(blocks):
        back = np.asarray(gguf.quants.dequantize(blocks, kind), np.float64).reshape(w.shape)
        return float((((back - w) ** 2) * imp).sum())

    plain, weighted = quantize_rows(w, ggml_type, threads=1), quantize_rows(w, ggml_type, threads=1, importance=imp)
    assert weighted_error(weighted) < 0.97 * weighted_error(plain)
    np.testing.assert_array_equal(quantize_rows(w, ggml_type, threads=3, importance=imp), weighted)
    with pytest.raises(EdgekitError, match="importance of shape"):
        quantize_rows(w, ggml_type, importance=imp[:256])


def test_tensors_stream_one_at_a_time(tmp_path):
    """Peak traced memory stays near one tensor, however many tensors the file holds."""
    n, rows, cols = 12, 512, 1024  # 2 MiB per f32 tensor, 24 MiB in all
    plan = [TensorPlan(f"t{i}.weight", f"t{i}", (rows, cols), "F32") for i in range(n)]
    loaded = []

    def load(p):
        loaded.append(p.gguf_name)
        seed = int(p.source[1:])
        return tensor_bytes(p, torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)), rtn_block_bytes)

    tracemalloc.start()
    out = write_gguf_streamed(tmp_path / "s.gguf", "qwen2vl", lambda w: None, plan, load)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one = rows * cols * 4
    assert loaded == [p.gguf_name for p in plan]
    assert peak < 3 * one, f"peak {peak / 2**20:.1f} MiB for {n} tensors of {one / 2**20:.1f} MiB"
    np.testing.assert_array_equal(
        read_tensor(out, "t7.weight"), torch.randn(rows, cols, generator=torch.Generator().manual_seed(7)).numpy()
    )


def test_same_inputs_same_bytes(tiny_ckpt, tmp_path):
    digests = []
    for i in range(2):
        out = write_decoder_gguf(tiny_ckpt, tmp_path / f"r{i}.gguf", "q4_k")
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert not list(tmp_path.glob("*.partial")), "temporary files left behind"


def test_llama_cpp_tokenizer_matches_checkpoint_tokenizer(tiny_ckpt, tiny_f32, shared_samples):
    """Same ids from llama.cpp's tokenizer and the checkpoint's on sample questions, with special tokens."""
    require("llama_cpp")
    from tokenizers import Tokenizer

    from edgekit.runtime.llama_decoder import LlamaDecoder

    hf = Tokenizer.from_file(str(open_checkpoint(tiny_ckpt).tokenizer_json))
    questions = []
    for name in ("driving.jsonl", "embodied.jsonl"):
        lines = (shared_samples / name).read_text(encoding="utf-8").splitlines()
        questions += [json.loads(line)["question"] for line in lines[:15]]
    questions += ["Point to the red cup.\n\n  Then   /no_think <think>\n\n</think>", "ÄÖü café 東京 12345 🚗"]
    with LlamaDecoder(tiny_f32, n_ctx=512) as dec:
        for q in questions:
            text = (
                f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{q}<|im_end|>\n<|im_start|>assistant\n"
            )
            assert dec.tokenize(text) == hf.encode(text, add_special_tokens=False).ids, q


def test_mmproj_layout(tiny_ckpt, tmp_path):
    ckpt = open_checkpoint(tiny_ckpt)
    v = ckpt.vision
    out = write_mmproj_gguf(tiny_ckpt, tmp_path / "mmproj.gguf", "f32")
    kv = _fields(out)
    assert kv["general.architecture"] == "clip"
    assert kv["clip.projector_type"] == "qwen2.5vl_merger"
    assert kv["clip.vision.n_wa_pattern"] == v.fullatt_blocks[0] + 1
    assert kv["clip.vision.block_count"] == v.depth
    assert kv["clip.vision.projection_dim"] == ckpt.text.hidden
    qkv = ckpt.get("visual.blocks.1.attn.qkv.weight").float().numpy()
    h = v.hidden
    for k, part in enumerate("qkv"):
        np.testing.assert_array_equal(read_tensor(out, f"v.blk.1.attn_{part}.weight"), qkv[k * h : (k + 1) * h])
    conv = ckpt.get("visual.patch_embed.proj.weight").float().numpy()
    np.testing.assert_array_equal(read_tensor(out, "v.patch_embd.weight"), conv[:, :, 0])
    np.testing.assert_array_equal(read_tensor(out, "v.patch_embd.weight.1"), conv[:, :, 1])


def test_window_pattern_must_be_even():
    assert window_attention_pattern((3, 7, 11, 15), 16, "cfg") == 4
    with pytest.raises(EdgekitError, match="evenly spaced"):
        window_attention_pattern((3, 8), 12, "cfg")


def test_cli_export(tiny_ckpt, tmp_path):
    from edgekit.cli import main

    out, mm = tmp_path / "d.gguf", tmp_path / "mm.gguf"
    assert (
        main(
            [
                "export-decoder",
                str(tiny_ckpt),
                "--format",
                "gguf",
                "--precision",
                "q8_0",
                "--mmproj",
                str(mm),
                "--mmproj-precision",
                "q8_0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert _fields(out)["general.file_type"] == 7
    assert _fields(mm)["general.file_type"] == 7
    assert main(["export-decoder", str(tiny_ckpt), "--precision", "q3_k", "--out", str(out)]) == 2
    assert main(["export-decoder", str(tiny_ckpt), "--format", "onnx", "--out", str(out)]) == 2
