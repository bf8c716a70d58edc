"""The text decoder as a llama.cpp GGUF file (architecture `qwen2vl`).

Three jobs, kept apart:
- `add_decoder_hparams` (+ gguf_tokenizer.py's `tokenizer_metadata`): the key-value section, every number
  read from the checkpoint (config.json, tokenizer.json, generation_config.json, the chat template);
- `decoder_tensor_plan`: which checkpoint tensor becomes which GGUF tensor, in which type;
- `write_gguf_streamed`: the file itself. Tensor infos (name, shape, type, byte size) are known
  from the safetensors headers, so header, key-values and tensor table are written first and the
  tensor data follows one tensor at a time: peak memory is one tensor, whatever the layer count.

Quantized types come from edgekit's own quantizers: a weight is fitted on the format's grid
(`edgekit.quant.grids`, RTN by default, or calibrated codes from `edgekit quantize`) and packed
into GGUF blocks without a second rounding (`edgekit.export.gguf_blocks`).

Facts from llama.cpp (convert_hf_to_gguf.py, gguf-py constants): Qwen2.5-VL's text model is arch
"qwen2vl" with `rope.dimension_sections` = mrope_section padded to 4 entries; tensors follow
gguf-py's TensorNameMap; the tokenizer is "gpt2" (byte-level BPE) with pre-tokenizer "qwen2".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.outputs import GGUF_WRITER_KEY
from edgekit.export.gguf_tokenizer import add_tokenizer, tokenizer_metadata
from edgekit.quant.formats import GGUF_FORMATS, Format, by_ggml_type, parse

ARCH = "qwen2vl"


@dataclass(frozen=True)
class TensorPlan:
    """One GGUF tensor: where it comes from and how it is stored."""

    gguf_name: str
    source: str  # canonical checkpoint name
    shape: tuple[int, ...]  # numpy order, e.g. [out, in]
    ggml_type: str  # "F32", "F16", "Q4_K", ...
    transform: str = ""  # "" or a named slice of the source (mmproj: "q", "k", "v", "t0", "t1")

    @property
    def nbytes(self) -> int:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[self.ggml_type]]
        n = int(np.prod(self.shape))
        return n // block * type_size


def ggml_type(name: str):
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType[name]


def block_size(type_name: str) -> int:
    from gguf import GGML_QUANT_SIZES

    return GGML_QUANT_SIZES[ggml_type(type_name)][0]


def gguf_format(fmt: Format | str) -> Format:
    """The Format of a GGUF file (or tensor): refuses formats GGUF cannot hold."""
    fmt = parse(fmt)
    if fmt.container != "gguf":
        raise EdgekitError(f"format {fmt.name} is not a GGUF type; choose one of {', '.join(GGUF_FORMATS)}")
    return fmt


def storage_type(shape: tuple[int, ...], fmt: Format | str) -> str:
    """GGUF type name of one tensor in a file of format `fmt` (Format.gguf_storage says the rule)."""
    return gguf_format(fmt).gguf_storage(shape).ggml_type


# ---- tensor names ---------------------------------------------------------------------------------


def decoder_tensor_names(num_layers: int, tied: bool) -> list[tuple[str, str]]:
    """(gguf name, canonical checkpoint name) for the text decoder, in llama.cpp's usual order."""
    pairs = [("token_embd.weight", "model.embed_tokens.weight")]
    for i in range(num_layers):
        src, dst = f"model.layers.{i}.", f"blk.{i}."
        pairs += [
            (dst + "attn_norm.weight", src + "input_layernorm.weight"),
            (dst + "attn_q.weight", src + "self_attn.q_proj.weight"),
            (dst + "attn_q.bias", src + "self_attn.q_proj.bias"),
            (dst + "attn_k.weight", src + "self_attn.k_proj.weight"),
            (dst + "attn_k.bias", src + "self_attn.k_proj.bias"),
            (dst + "attn_v.weight", src + "self_attn.v_proj.weight"),
            (dst + "attn_v.bias", src + "self_attn.v_proj.bias"),
            (dst + "attn_output.weight", src + "self_attn.o_proj.weight"),
            (dst + "ffn_norm.weight", src + "post_attention_layernorm.weight"),
            (dst + "ffn_gate.weight", src + "mlp.gate_proj.weight"),
            (dst + "ffn_up.weight", src + "mlp.up_proj.weight"),
            (dst + "ffn_down.weight", src + "mlp.down_proj.weight"),
        ]
    pairs.append(("output_norm.weight", "model.norm.weight"))
    if not tied:
        pairs.append(("output.weight", "lm_head.weight"))
    return pairs


def decoder_tensor_plan(ckpt, fmt: Format | str, type_overrides: dict | None = None) -> list[TensorPlan]:
    """`type_overrides`: canonical tensor name -> Format (or its name) replacing the file's format for that
    matrix (mixed precision: lm_head, embeddings, chosen layers)."""
    fmt = gguf_format(fmt)
    overrides = dict(type_overrides or {})
    plan = []
    for gguf_name, source in decoder_tensor_names(ckpt.text.num_layers, ckpt.text.tie_embeddings):
        shape = tuple(ckpt.shape(source))
        ggml = storage_type(shape, fmt)
        if source in overrides:
            wanted = gguf_format(overrides.pop(source))
            if len(shape) < 2:
                raise EdgekitError(f"type override {wanted.name} for '{source}': only matrices take another type")
            if not wanted.fits_rows(shape[-1]):
                raise EdgekitError(
                    f"type override {wanted.name} for '{source}': rows of {shape[-1]} are not whole "
                    f"{wanted.group_size}-blocks"
                )
            ggml = wanted.ggml_type
        plan.append(TensorPlan(gguf_name, source, shape, ggml))
    if overrides:
        raise EdgekitError(f"type overrides name no decoder tensor: {sorted(overrides)[:3]}")
    return plan


# ---- metadata -------------------------------------------------------------------------------------


def add_decoder_hparams(writer, ckpt, fmt: Format) -> None:
    t = ckpt.text
    writer.add_type("model")
    writer.add_name(ckpt.path.name)
    writer.add_context_length(t.max_position)
    writer.add_embedding_length(t.hidden)
    writer.add_block_count(t.num_layers)
    writer.add_feed_forward_length(t.intermediate)
    writer.add_head_count(t.heads)
    writer.add_head_count_kv(t.kv_heads)
    writer.add_key_length(t.head_dim)
    writer.add_value_length(t.head_dim)
    writer.add_rope_dimension_count(t.head_dim)
    writer.add_rope_freq_base(t.rope_theta)
    writer.add_layer_norm_rms_eps(t.rms_eps)
    # llama.cpp keeps 4 M-RoPE sections (t, h, w, extra); Qwen2.5-VL uses the first three.
    writer.add_rope_dimension_sections(list(t.mrope_section) + [0] * (4 - len(t.mrope_section)))
    writer.add_file_type(fmt.gguf_file_type)
    if fmt.quantized:
        writer.add_quantization_version(2)  # GGML_QNT_VERSION


# ---- tensor data ----------------------------------------------------------------------------------


def encode_float(w, type_name: str) -> np.ndarray:
    """A float tensor as the bytes of an F32 / F16 / BF16 GGUF tensor (round to nearest even)."""
    import torch

    dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[type_name]
    x = w.detach().to(dtype).contiguous()
    if type_name == "BF16":
        return x.view(torch.int16).numpy().view(np.uint8)
    return x.numpy()


QuantizeFn = Callable[[str, "object", str], np.ndarray]  # (source name, float32 weight [out, in], type) -> block bytes


def rtn_block_bytes(source: str, w, type_name: str) -> np.ndarray:
    """Default quantizer: round-to-nearest by llama.cpp's own quantizer (edgekit.quant.ggml_quantize), on every
    core: the bytes `llama-quantize` writes for this type."""
    del source
    from edgekit.quant.ggml_quantize import quantize_rows

    by_ggml_type(type_name)  # a type edgekit writes
    return quantize_rows(w.detach().float().numpy(), type_name).reshape(w.shape[0], -1)


CHUNK_BYTES = 16 << 20  # float32 rows per chunk; quantizer temporaries are a small multiple of this


def tensor_chunks(plan: TensorPlan, w, quantize: QuantizeFn, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """The stored bytes of one planned tensor, a block of rows at a time.

    Every GGUF type here is row-independent (blocks run along a row), so encoding row blocks gives
    the same bytes as encoding the whole tensor, while the float32 working set stays bounded even
    for a 150k-row embedding.
    """
    if tuple(w.shape) != plan.shape:
        raise EdgekitError(f"tensor '{plan.source}': shape {list(w.shape)} differs from the plan {list(plan.shape)}")
    row_bytes = 4 * int(np.prod(plan.shape[1:])) if len(plan.shape) > 1 else 4 * plan.shape[0]
    step = max(1, chunk_bytes // max(1, row_bytes)) if len(plan.shape) > 1 else plan.shape[0]
    total = 0
    for r in range(0, plan.shape[0], step):
        part = w[r : r + step].float()  # [rows, ...] float32
        if plan.ggml_type in ("F32", "F16", "BF16"):
            data = encode_float(part, plan.ggml_type)
        else:
            data = np.ascontiguousarray(quantize(plan.source, part, plan.ggml_type))
        total += data.nbytes
        yield data
    if total != plan.nbytes:
        raise AssertionError(f"{plan.gguf_name}: encoder gave {total} bytes, table says {plan.nbytes}")


def tensor_bytes(plan: TensorPlan, w, quantize: QuantizeFn) -> np.ndarray:
    """The stored bytes of one planned tensor in one array (uint8, or the float array for F32/F16)."""
    chunks = [c.reshape(-1).view(np.uint8) for c in tensor_chunks(plan, w, quantize)]
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def write_gguf_streamed(
    out: str | Path,
    arch: str,
    add_metadata: Callable[[object], None],
    plan: list[TensorPlan],
    load: Callable[[TensorPlan], np.ndarray | Iterable[np.ndarray]],
    on_tensor: Callable[[TensorPlan], None] | None = None,
) -> Path:
    """Write a GGUF file atomically, loading and writing one tensor (or one block of rows) at a time.

    `load(plan)` returns the stored bytes of one tensor, as one array or an iterable of row chunks;
    nothing is held between tensors. The tensor table comes first (sizes are known from the plan),
    then each tensor's data at the offsets that table promised: aligned, zero-padded.
    """
    import gguf

    from edgekit.atomic import atomic_path

    out = Path(out)
    with atomic_path(out) as tmp:  # a full disk or a kill leaves no half-written GGUF, and one line of error
        writer = gguf.GGUFWriter(tmp, arch)
        add_metadata(writer)
        writer.add_string(GGUF_WRITER_KEY, "edgekit")  # marks an earlier output `--out` may replace (edgekit.outputs)
        for p in plan:
            # The logical shape goes into the table; float32 dtype tells the writer not to reinterpret it.
            writer.add_tensor_info(
                p.gguf_name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=ggml_type(p.ggml_type)
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        fout = writer.fout[0]
        for p in plan:
            writer.write_padding(fout, fout.tell())  # each tensor starts on the data alignment
            data = load(p)
            written = 0
            for chunk in [data] if isinstance(data, np.ndarray) else data:
                fout.write(np.ascontiguousarray(chunk).reshape(-1).view(np.uint8).data)
                written += chunk.nbytes
            del data
            if written != p.nbytes:
                raise AssertionError(f"{p.gguf_name}: wrote {written} bytes, table says {p.nbytes}")
            writer.write_padding(fout, written)
            if on_tensor:
                on_tensor(p)
        writer.close()
    return out


def calibrated_bytes(p: TensorPlan, qw) -> np.ndarray:
    """Pack a calibrated QuantizedWeight into the planned GGUF type, refusing a grid of another type."""
    from edgekit.export.gguf_blocks import pack_blocks

    fmt = by_ggml_type(p.ggml_type)
    if qw.grid != fmt.grid_name:
        raise EdgekitError(
            f"tensor '{p.source}' was calibrated on grid {qw.grid} but the GGUF stores it as "
            f"{p.ggml_type}; calibrate with --format {fmt.name}"
        )
    type_id, data = pack_blocks(qw)
    if type_id != int(ggml_type(p.ggml_type)):
        raise AssertionError(f"packer wrote ggml type {type_id} for {p.ggml_type}")
    return data


def write_decoder_gguf(
    ckpt_path: str | Path,
    out: str | Path,
    fmt: Format | str = "gguf:f16",
    *,
    quantize: QuantizeFn | None = None,
    calibrated=None,
    type_overrides: dict[str, str] | None = None,
    on_tensor: Callable[[TensorPlan], None] | None = None,
) -> Path:
    """`edgekit export-decoder --format gguf`: the text decoder of a checkpoint as one GGUF file.

    `calibrated` (an edgekit.quant.calibrate.CalibrationResult) supplies codes + params for its
    linears, packed as they are (no second rounding), and norm weights with smoothing scales folded in.
    """
    from edgekit.model.checkpoint import open_checkpoint

    fmt = gguf_format(fmt)
    ckpt = open_checkpoint(ckpt_path)
    plan = decoder_tensor_plan(ckpt, fmt, type_overrides)
    tok = tokenizer_metadata(ckpt)
    quantize = quantize or rtn_block_bytes

    def add_metadata(writer) -> None:
        add_decoder_hparams(writer, ckpt, fmt)
        add_tokenizer(writer, tok)

    def load(p: TensorPlan) -> Iterator[np.ndarray]:
        if calibrated is not None and p.source in calibrated.quantized:
            yield calibrated_bytes(p, calibrated.quantized[p.source])
            return
        if calibrated is not None and p.source in calibrated.folded:
            yield from tensor_chunks(p, calibrated.folded[p.source], quantize)
            return
        yield from tensor_chunks(p, ckpt.get(p.source), quantize)
        # Drop the memory maps: pages read through them stay resident (and in RSS) while mapped,
        # which would make peak memory grow with the number of layers.
        ckpt.close()

    try:
        return write_gguf_streamed(out, ARCH, add_metadata, plan, load, on_tensor)
    finally:
        ckpt.close()


def read_tensor(path: str | Path, name: str) -> np.ndarray:
    """One tensor of a GGUF file, dequantized to float32 by the gguf package (the format's oracle)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    for t in GGUFReader(str(path)).tensors:
        if t.name == name:
            return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(
                tuple(int(d) for d in reversed(t.shape))
            )
    raise EdgekitError(f"{path}: no tensor named '{name}'")
