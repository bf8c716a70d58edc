"""A Qwen2.5-VL-architecture checkpoint in Hugging Face layout, opened lazily.

`open_checkpoint` reads config.json, the safetensors headers (never tensor data), the tokenizer
files and the processor settings, and validates them against each other: every tensor the
architecture needs must be present with the shape config.json implies. `Checkpoint.get(name)`
then loads one tensor at a time through a memory map, so a 7B model is never held whole.

Tensor names are canonicalised to the Hub layout that Qwen2.5-VL / MiMo-Embodied checkpoints use
(`model.layers.*`, `visual.*`, `lm_head.*`); transformers 5 `save_pretrained` output
(`model.language_model.*`, `model.visual.*`) is read too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.json_files import read_json, read_json_object
from edgekit.model.config import (
    TextDims,
    TokenIds,
    VisionDims,
    check_architecture,
    read_text_dims,
    read_token_ids,
    read_vision_dims,
)
from edgekit.model.safetensors_header import TensorInfo, read_header
from edgekit.model.weight_files import FLOAT_DTYPES, INDEX_FILE, read_pickle_index, weight_shards
from edgekit.safe_files import read_regular, sha256_file  # noqa: F401  (sha256_file: re-exported)

TOKENIZER_FILES = ("tokenizer.json",)

_NAME_PREFIXES = (
    ("model.language_model.", "model."),
    ("model.visual.", "visual."),
)


def canonical_name(name: str) -> str:
    for old, new in _NAME_PREFIXES:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def expected_shapes(text: TextDims, vision: VisionDims) -> dict[str, tuple[int, ...]]:
    """Every tensor the architecture needs, with the shape config.json implies."""
    t, v = text, vision
    q, kv = t.heads * t.head_dim, t.kv_heads * t.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (t.vocab, t.hidden),
        "model.norm.weight": (t.hidden,),
    }
    if not t.tie_embeddings:
        shapes["lm_head.weight"] = (t.vocab, t.hidden)
    for i in range(t.num_layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (q, t.hidden),
            p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, t.hidden),
            p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, t.hidden),
            p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (t.hidden, q),
            p + "mlp.gate_proj.weight": (t.intermediate, t.hidden),
            p + "mlp.up_proj.weight": (t.intermediate, t.hidden),
            p + "mlp.down_proj.weight": (t.hidden, t.intermediate),
            p + "input_layernorm.weight": (t.hidden,),
            p + "post_attention_layernorm.weight": (t.hidden,),
        }
    h, m = v.hidden, v.hidden * v.merge * v.merge
    shapes["visual.patch_embed.proj.weight"] = (h, v.in_chans, v.temporal_patch, v.patch, v.patch)
    for i in range(v.depth):
        p = f"visual.blocks.{i}."
        shapes |= {
            p + "norm1.weight": (h,),
            p + "norm2.weight": (h,),
            p + "attn.qkv.weight": (3 * h, h),
            p + "attn.qkv.bias": (3 * h,),
            p + "attn.proj.weight": (h, h),
            p + "attn.proj.bias": (h,),
            p + "mlp.gate_proj.weight": (v.intermediate, h),
            p + "mlp.gate_proj.bias": (v.intermediate,),
            p + "mlp.up_proj.weight": (v.intermediate, h),
            p + "mlp.up_proj.bias": (v.intermediate,),
            p + "mlp.down_proj.weight": (h, v.intermediate),
            p + "mlp.down_proj.bias": (h,),
        }
    shapes |= {
        "visual.merger.ln_q.weight": (h,),
        "visual.merger.mlp.0.weight": (m, m),
        "visual.merger.mlp.0.bias": (m,),
        "visual.merger.mlp.2.weight": (v.out_hidden, m),
        "visual.merger.mlp.2.bias": (v.out_hidden,),
    }
    return shapes


@dataclass
class Checkpoint:
    path: Path
    config: dict
    text: TextDims
    vision: VisionDims
    token_ids: TokenIds
    tensors: dict[str, TensorInfo]  # canonical name -> where its bytes are
    stored_names: dict[str, str]  # canonical name -> name inside the file
    tokenizer_json: Path
    tokenizer_config: dict
    chat_template: str | None
    preprocessor_config: dict
    generation_config: dict
    _pickled: dict = field(default_factory=dict, repr=False)  # only with allow_pickle: name -> tensor (memory-mapped)
    _handles: dict = field(default_factory=dict, repr=False)
    allow_nonfinite: bool = False  # NaN/Inf weights are refused as they stream unless the user asks
    _finite_checked: set = field(default_factory=set, repr=False)

    # ---- tensors -------------------------------------------------------------------------------
    def tensor_names(self) -> list[str]:
        return sorted(self.tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._info(name).shape

    def dtype(self, name: str) -> str:
        return self._info(name).dtype

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise EdgekitError(f"{self.path}: no tensor named '{name}'") from None

    def get(self, name: str):
        """Load one tensor (torch.Tensor, stored dtype) through a memory map; NaN/Inf refused (once per tensor)."""
        from safetensors import safe_open

        info = self._info(name)
        if self._pickled:
            tensor = self._pickled[self.stored_names[name]]
        else:
            handle = self._handles.get(info.file)
            if handle is None:
                handle = self._handles[info.file] = safe_open(str(info.file), framework="pt")
            tensor = handle.get_tensor(self.stored_names[name])
        if not self.allow_nonfinite and name not in self._finite_checked:
            bad = count_nonfinite(tensor)
            if bad:
                raise EdgekitError(
                    f"{info.file}: tensor '{name}' has {bad} NaN/Inf value(s) of {tensor.numel()}; "
                    "the checkpoint is corrupt (a quantized block with one NaN is all NaN). "
                    "`edgekit build --allow-nonfinite` carries them through, if you really want that"
                )
            self._finite_checked.add(name)
        return tensor

    def close(self) -> None:
        self._handles.clear()

    # ---- derived facts ---------------------------------------------------------------------------
    @cached_property
    def special_tokens(self) -> dict[str, int]:
        """Every added token of the tokenizer (special or not, e.g. <think>) -> id."""
        tok = read_json(self.tokenizer_json)
        return {t["content"]: int(t["id"]) for t in tok.get("added_tokens", [])}

    def parameter_counts(self) -> dict[str, int]:
        counts = {"vision": 0, "embeddings": 0, "decoder_layers": 0, "lm_head": 0, "other": 0}
        for name, info in self.tensors.items():
            if name.startswith("visual."):
                counts["vision"] += info.numel
            elif name == "model.embed_tokens.weight":
                counts["embeddings"] += info.numel
            elif name.startswith("model.layers."):
                counts["decoder_layers"] += info.numel
            elif name == "lm_head.weight":
                counts["lm_head"] += info.numel
            else:
                counts["other"] += info.numel
        counts["total"] = sum(counts.values())
        return counts

    def weight_files(self) -> list[Path]:
        return sorted({info.file for info in self.tensors.values()})

    def files_for_hash(self) -> list[Path]:
        """Every file that defines the model's behaviour (weights, config, tokenizer, processor)."""
        names = [
            "config.json",
            "generation_config.json",
            "preprocessor_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
            "chat_template.json",
            INDEX_FILE,
            "edgekit-qat.json",
        ]  # a QAT checkpoint's manifest (hashes of its trained layers)
        files = [self.path / n for n in names if (self.path / n).is_file()]
        return sorted(set(files) | set(self.weight_files()))

    def file_hashes(self) -> dict[str, str]:
        """sha256 of every file in files_for_hash(), streamed (relative name -> hex digest)."""
        return {str(p.relative_to(self.path)): sha256_file(p) for p in self.files_for_hash()}

    @cached_property
    def content_hash(self) -> str:
        """One digest over every defining file: the key for caches derived from this checkpoint."""
        h = hashlib.sha256()
        for rel, digest in sorted(self.file_hashes().items()):
            h.update(f"{rel}\0{digest}\n".encode())
        return h.hexdigest()


def count_nonfinite(tensor, chunk: int = 1 << 24) -> int:
    """How many NaN/Inf values a float tensor holds, in chunks (no full-size bool temporary for a 7B embedding)."""
    import torch

    if not tensor.is_floating_point():
        return 0
    flat = tensor.reshape(-1)
    return sum(int((~torch.isfinite(flat[i : i + chunk])).sum()) for i in range(0, flat.numel(), chunk))


def chat_template_from(read, tokenizer_config: dict, where: Path) -> str | None:
    """The chat template: chat_template.jinja, else chat_template.json, else tokenizer_config.json's; each file read
    by `read(name) -> bytes | None` (None: absent)."""
    from edgekit.json_files import parse_json

    jinja = read("chat_template.jinja")
    if jinja is not None:
        try:
            return jinja.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EdgekitError(f"{where / 'chat_template.jinja'}: not UTF-8 text (byte {e.start})") from None
    as_json = read("chat_template.json")
    if as_json is not None:
        obj = parse_json(as_json, str(where / "chat_template.json"))
        tpl = obj.get("chat_template") if isinstance(obj, dict) else None
        if not isinstance(tpl, str):
            raise EdgekitError(f"{where / 'chat_template.json'}: needs a 'chat_template' string")
        return tpl
    tpl = tokenizer_config.get("chat_template")
    return tpl if isinstance(tpl, str) else None


def _reader(path: Path):
    """read(name) for the files of a checkpoint directory (bounded size, regular files; None when absent)."""

    def read(name: str) -> bytes | None:
        f = path / name
        return read_regular(f, max_bytes=64 << 20) if (f.exists() or f.is_symlink()) else None

    return read


def open_checkpoint(
    path: str | Path, *, allow_pickle: bool = False, require_tokenizer: bool = True, allow_nonfinite: bool = False
) -> Checkpoint:
    """Open and validate a checkpoint directory, reading headers only."""
    path = Path(path)
    if not path.is_dir():
        raise EdgekitError(f"{path}: checkpoint directory not found")
    config_path = path / "config.json"
    if not config_path.exists():
        raise EdgekitError(f"{config_path}: missing; a Hugging Face checkpoint directory needs config.json")
    config = read_json(config_path)
    check_architecture(config, str(config_path))  # also: config.json must be a JSON object
    text = read_text_dims(config, str(config_path))
    vision = read_vision_dims(config, str(config_path))
    token_ids = read_token_ids(config, str(config_path))

    tokenizer_json = path / "tokenizer.json"
    if require_tokenizer and not tokenizer_json.exists():
        raise EdgekitError(
            f"{tokenizer_json}: missing tokenizer; copy tokenizer.json (and tokenizer_config.json) from the source checkpoint"
        )
    if require_tokenizer:
        check_tokenizer_json(tokenizer_json)
    tokenizer_config, preprocessor, generation = (
        _optional_object(path / name)
        for name in ("tokenizer_config.json", "preprocessor_config.json", "generation_config.json")
    )

    tensors: dict[str, TensorInfo] = {}
    stored: dict[str, str] = {}
    pickled: dict = {}
    for shard in weight_shards(path, allow_pickle):
        infos = read_pickle_index(shard, pickled) if shard.suffix != ".safetensors" else read_header(shard)
        for name, info in infos.items():
            canon = canonical_name(name)
            if canon in tensors:
                raise EdgekitError(f"{shard}: tensor '{name}' also appears in {tensors[canon].file.name}")
            tensors[canon], stored[canon] = info, name

    expected = expected_shapes(text, vision)
    for name, shape in expected.items():
        info = tensors.get(name)
        if info is None:
            raise EdgekitError(f"{path}: tensor '{name}' is missing from the weights (config.json implies it)")
        if info.shape != shape:
            raise EdgekitError(
                f"{info.file}: tensor '{name}' has shape {list(info.shape)} but config.json implies {list(shape)}"
            )
        if info.dtype not in FLOAT_DTYPES:
            raise EdgekitError(
                f"{info.file}: tensor '{name}' is {info.dtype}; edgekit quantizes from float weights "
                f"({', '.join(FLOAT_DTYPES)}), and an already-quantized checkpoint (int8, FP8) would be re-quantized "
                "from its raw codes without its scales: give the original bf16/fp16 checkpoint"
            )
    return Checkpoint(
        path=path,
        config=config,
        text=text,
        vision=vision,
        token_ids=token_ids,
        tensors=tensors,
        stored_names=stored,
        _pickled=pickled,
        tokenizer_json=tokenizer_json,
        tokenizer_config=tokenizer_config,
        chat_template=chat_template_from(_reader(path), tokenizer_config, path),
        preprocessor_config=preprocessor,
        generation_config=generation,
        allow_nonfinite=allow_nonfinite,
    )


def check_tokenizer_json(path: Path) -> None:
    """tokenizer.json must parse as a tokenizer (a corrupt one fails here, with its name, not deep in a stage)."""
    from edgekit.model.tokenizer_file import MAX_TOKENIZER_BYTES, tokenizer_from_bytes

    try:
        tokenizer_from_bytes(read_regular(path, max_bytes=MAX_TOKENIZER_BYTES), path)
    except EdgekitError as e:
        raise EdgekitError(f"{e.message}; copy tokenizer.json again from the source checkpoint") from None


def _optional_object(path: Path) -> dict:
    return read_json_object(path, optional=True)
