"""QAT on formats whose runtime quantizes activations (FP8, NVFP4 W4A4): training sees the activations as the runtime
computes them, under the PTQ init's input scales, with a straight-through gradient."""

from __future__ import annotations

import pytest
import torch

from edgekit.qat.block_phase import quantized_layer
from edgekit.qat.student import LINEARS, position_embeddings
from edgekit.quant.calibrate import QuantConfig, calibrate
from edgekit.quant.formats import parse
from edgekit.quant.grids import dequantize_weight
from edgekit.quant.layers import decoder_layer, hf_config, rotary


@pytest.mark.parametrize("grid", ["nvidia:fp8", "nvidia:nvfp4"])
def test_the_trained_layer_quantizes_its_activations_as_the_runtime_does(tiny_ckpt, tmp_path, grid, test_seed):
    from edgekit.model.checkpoint import open_checkpoint

    init = calibrate(tiny_ckpt, QuantConfig(method="rtn", grid=grid, n_samples=2), tmp_path / "cache")
    ck, cfg = open_checkpoint(tiny_ckpt), hf_config(tiny_ckpt)
    scales = {k: v for k, v in init.input_scales.items() if k.startswith("model.layers.0.")}
    assert len(scales) == len(LINEARS)
    x = torch.randn(1, 29, ck.text.hidden, generator=torch.Generator().manual_seed(test_seed)) * 3
    pos = torch.arange(29).expand(3, 29)
    rope = rotary(cfg)
    pe = position_embeddings(rope, x, pos)

    trained = quantized_layer(ck, cfg, 0, init.quantized, init.folded, "original", scales)
    floats = quantized_layer(ck, cfg, 0, init.quantized, init.folded, "original", None)
    y = trained.run(trained.weights(), x, pe)
    y_float = floats.run(floats.weights(), x, pe)

    # the same layer written out independently: the init's weights, each linear's input through the format's own
    # activation quantization under its scale (what edgekit.quant.evaluate applies to the whole model)
    fmt = parse(grid)
    layer = decoder_layer(ck, cfg, 0)
    with torch.no_grad():
        for n in LINEARS:
            layer.get_submodule(n).weight.copy_(dequantize_weight(init.quantized[f"model.layers.0.{n}.weight"]))
            s = scales[f"model.layers.0.{n}"]
            layer.get_submodule(n).register_forward_pre_hook(lambda m, a, s=s: (fmt.activation_qdq(a[0], s),))
        want = layer(x, attention_mask=None, position_embeddings=pe)
        want = want[0] if isinstance(want, tuple) else want
    assert torch.allclose(y, want, rtol=0, atol=1e-5 * float(want.abs().max()))
    assert not torch.allclose(y, y_float, rtol=0, atol=1e-3 * float(y_float.abs().max()))  # the quantization is seen

    y.square().sum().backward()  # straight through the activation rounding to the latent weights
    for fq in trained.linears().values():
        assert fq.u.grad is not None and fq.u.grad.abs().sum() > 0
