"""Checkpoint reader: dims from config, headers only, and one clear error per kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.model.checkpoint import open_checkpoint


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def test_inspect_json_matches_config(tiny_ckpt, capsys):
    assert main(["inspect", str(tiny_ckpt), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    v = cfg["vision_config"]
    assert info["text"]["num_layers"] == cfg["num_hidden_layers"]
    assert info["text"]["hidden"] == cfg["hidden_size"]
    assert info["text"]["heads"] == cfg["num_attention_heads"]
    assert info["text"]["kv_heads"] == cfg["num_key_value_heads"]
    assert info["text"]["head_dim"] == cfg["hidden_size"] // cfg["num_attention_heads"]
    assert info["text"]["intermediate"] == cfg["intermediate_size"]
    assert info["text"]["vocab"] == cfg["vocab_size"]
    assert list(info["text"]["mrope_section"]) == cfg["rope_scaling"]["mrope_section"]
    assert info["text"]["tie_embeddings"] is False
    assert info["vision"]["depth"] == v["depth"] and info["vision"]["hidden"] == v["hidden_size"]
    assert info["vision"]["head_dim"] == 80
    assert list(info["vision"]["fullatt_blocks"]) == v["fullatt_block_indexes"]
    assert info["vision"]["patch_dim"] == 3 * 2 * 14 * 14
    # parameter count equals the sum of the header shapes
    ck = open_checkpoint(tiny_ckpt)
    assert info["parameters"]["total"] == sum(t.numel for t in ck.tensors.values())
    assert info["special_tokens"]["<|image_pad|>"] == cfg["image_token_id"]
    assert "<think>" in info["special_tokens"]
    # int4 with group-128 scales is smaller than int8, smaller than bf16
    wb = info["weight_bytes"]
    assert wb["int4"]["decoder"] < wb["int8"]["decoder"] < wb["bf16"]["decoder"]


def test_reads_transformers5_layout(tiny_ckpt, tmp_path):
    """A checkpoint saved by transformers 5 (model.language_model.* names, nested config) reads the same."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tiny_ckpt), dtype=torch.bfloat16)
    out = tmp_path / "hf5"
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(tiny_ckpt / f, out / f)
    a, b = open_checkpoint(tiny_ckpt), open_checkpoint(out)
    assert a.text == b.text and a.vision == b.vision
    assert a.tensor_names() == b.tensor_names()
    name = "model.layers.1.self_attn.k_proj.weight"
    assert torch.equal(a.get(name), b.get(name))


def test_get_loads_one_tensor_lazily(tiny_ckpt):
    ck = open_checkpoint(tiny_ckpt)
    w = ck.get("visual.blocks.0.attn.qkv.weight")
    assert tuple(w.shape) == ck.shape("visual.blocks.0.attn.qkv.weight") == (3 * ck.vision.hidden, ck.vision.hidden)


def _expect_error(args, capsys, *needles):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    one_line = " ".join(err.split())
    assert "Traceback" not in err
    for n in needles:
        assert n in one_line, one_line
    return one_line


def test_truncated_safetensors(tiny_ckpt, tmp_path, capsys):
    ck = _copy(tiny_ckpt, tmp_path)
    f = ck / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    _expect_error(["inspect", str(ck)], capsys, "model.safetensors", "truncated")


def test_corrupt_safetensors_header(tiny_ckpt, tmp_path, capsys):
    ck = _copy(tiny_ckpt, tmp_path)
    f = ck / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:20] = b"not json!!!!"
    f.write_bytes(bytes(data))
    _expect_error(["inspect", str(ck)], capsys, "model.safetensors", "corrupt")


def test_wrong_architecture(tiny_ckpt, tmp_path, capsys):
    ck = _copy(tiny_ckpt, tmp_path)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["LlamaForCausalLM"], "llama"
    (ck / "config.json").write_text(json.dumps(cfg))
    _expect_error(["inspect", str(ck)], capsys, "unsupported architecture", "LlamaForCausalLM")


def test_missing_tokenizer(tiny_ckpt, tmp_path, capsys):
    ck = _copy(tiny_ckpt, tmp_path)
    (ck / "tokenizer.json").unlink()
    _expect_error(["inspect", str(ck)], capsys, "tokenizer.json", "missing tokenizer")


def test_missing_config(tiny_ckpt, tmp_path, capsys):
    ck = _copy(tiny_ckpt, tmp_path)
    (ck / "config.json").unlink()
    _expect_error(["inspect", str(ck)], capsys, "config.json", "missing")


def test_shape_disagrees_with_config(tiny_ckpt, tmp_path, capsys):
    ck = _copy(tiny_ckpt, tmp_path)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["intermediate_size"] += 64
    (ck / "config.json").write_text(json.dumps(cfg))
    _expect_error(
        ["inspect", str(ck)], capsys, "model.layers.0.mlp.gate_proj.weight", "[1024, 512]", "config.json implies"
    )


def test_pickle_weights_refused(tiny_ckpt, tmp_path, capsys):
    ck = _copy(tiny_ckpt, tmp_path)
    (ck / "model.safetensors").unlink()
    (ck / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    _expect_error(["inspect", str(ck)], capsys, "pytorch_model.bin", "--allow-pickle")


def test_missing_shard_listed_in_index(tmp_path, capsys):
    from edgekit.model.fixtures import make_tiny

    ck = make_tiny(tmp_path / "small", "small")
    shards = sorted(ck.glob("model-*.safetensors"))
    assert len(shards) > 1, "small preset is sharded with an index"
    shards[-1].unlink()
    _expect_error(["inspect", str(ck)], capsys, shards[-1].name, "missing")


def test_bad_mrope_section_is_user_error(tiny_ckpt, tmp_path):
    ck = _copy(tiny_ckpt, tmp_path)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["rope_scaling"]["mrope_section"] = [16, 24, 25]
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgekitError, match="mrope_section"):
        open_checkpoint(ck)


def test_pickle_weights_read_with_allow_pickle(tiny_ckpt, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    ck = _copy(tiny_ckpt, tmp_path)
    state = load_file(str(ck / "model.safetensors"))
    (ck / "model.safetensors").unlink()
    torch.save(state, ck / "pytorch_model.bin")
    assert main(["inspect", str(ck)]) == 2
    assert main(["inspect", str(ck), "--json", "--allow-pickle"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["total"] == sum(t.numel() for t in state.values())
    opened = open_checkpoint(ck, allow_pickle=True)
    assert torch.equal(opened.get("lm_head.weight"), state["lm_head.weight"])
