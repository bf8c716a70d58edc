"""FP4 decoders (GGUF MXFP4 and NVFP4), Q5_0 and Q5_1, in llama.cpp: the file computes the fake-quantized torch model.

The whole small decoder, written in each type, runs in llama.cpp and its logits are compared with transformers running
the same checkpoint with every such matrix replaced by the file's own values (the gguf package's dequantizer; edgekit's
FP4 grids are llama.cpp's blocks bit for bit: tests/export, tests/quant). llama.cpp multiplies these weights by
Q8_0-quantized activations, so the two differ by that rounding: the bar is 5% of max |logit| and 15% of what the
quantization itself moves the logits by. Measured on the small preset: NVFP4 2.6% against 40%, MXFP4 1.9% against 49%,
Q5_0 and Q5_1 (the types added to show what a new GGUF format touches, before and after formats became one object
each) 2.4% against 21% and 2.4% against 17%. (Against edgekit's torch RTN of the
legacy types instead of the file, Q5_0 was 4.7%: that RTN rounds with the float16 scale, llama.cpp's quantizer with
the unrounded one, and 0.13% of the weights land on another code.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import require

require("llama_cpp")
gguf = require("gguf")

QUESTION = "Which lane should the car take to turn left at the next junction?"


@pytest.fixture(scope="module")
def reference(small_ckpt):
    from edgekit.runtime.torch_ref import TorchReference

    ref = TorchReference(small_ckpt)
    prompt = ref.prepare(QUESTION, [])
    return ref, prompt, ref.logits(prompt).numpy(), {k: v.clone() for k, v in ref.model.state_dict().items()}


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4", "q5_0", "q5_1"])
def test_fp4_gguf_runs_in_llama_cpp_as_the_fake_quantized_model(small_ckpt, reference, tmp_path, fmt):
    from edgekit.export.gguf import decoder_tensor_plan, write_decoder_gguf
    from edgekit.quant.evaluate import _hf_name
    from edgekit.runtime.llama_decoder import LlamaDecoder

    ref, prompt, full_precision, original = reference
    path = write_decoder_gguf(small_ckpt, tmp_path / f"{fmt}.gguf", fmt)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    with LlamaDecoder(path, kv_cache="f32") as dec:
        got = dec.logits(prompt.input_ids[0].tolist())

    plan = [p for p in decoder_tensor_plan(ref.checkpoint, fmt) if p.ggml_type == fmt.upper()]
    assert plan and all(types[p.gguf_name] == fmt.upper() for p in plan)
    assert len(plan) >= 7 * ref.checkpoint.text.num_layers  # every attention and MLP matrix
    state = ref.model.state_dict()
    try:
        with torch.no_grad():
            tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
            for p in plan:  # the file's own values (gguf's dequantizer), as llama.cpp reads them
                t = tensors[p.gguf_name]
                w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32).reshape(p.shape)
                state[_hf_name(p.source)].copy_(torch.from_numpy(w))
        fake_quantized = ref.logits(prompt).numpy()
    finally:
        ref.model.load_state_dict(original)

    def rel(a, b):
        return float(np.abs(a - b).max() / np.abs(b).max())

    runtime, quantization = rel(got, fake_quantized), rel(fake_quantized, full_precision)
    print(
        f"{fmt}: llama.cpp vs fake-quantized {runtime:.2e}, fake-quantized vs full precision {quantization:.2e} "
        "of max |logit|"
    )
    assert runtime <= 0.05 and runtime < 0.15 * quantization, (runtime, quantization)
