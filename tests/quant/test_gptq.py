"""GPTQ on format grids: exact RTN equivalence with an identity Hessian, lower output error with real-looking inputs."""

from __future__ import annotations

import pytest
import torch

from edgekit.quant.grids import dequantize_weight, fit_and_quantize, get_grid
from edgekit.quant.gptq import gptq_quantize, gptq_quantize_shared


def _activations(n: int, d: int, gen: torch.Generator, outliers: int = 4) -> torch.Tensor:
    """Inputs like a trained LLM's: correlated channels plus a few large-magnitude ones."""
    mix = torch.randn(d, d, generator=gen) / d**0.5
    X = torch.randn(n, d, generator=gen) @ (torch.eye(d) + 0.5 * mix)
    idx = torch.randperm(d, generator=gen)[:outliers]
    X[:, idx] *= 20.0
    return X


def _out_err(X, W, Q):
    return ((X @ W.T - X @ Q.T) ** 2).sum().item()


@pytest.mark.parametrize(
    "grid",
    ["gguf:q4_0", "gguf:q4_k", "gguf:q6_k", "gguf:mxfp4", "gguf:nvfp4", "nvidia:w4a16", "int8:channel", "nvidia:fp8"],
)
def test_identity_hessian_equals_rtn(grid):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    W = torch.randn(37, 512, generator=gen) * 0.02
    a = gptq_quantize(W, torch.eye(512), grid, damp=0.0, weighted_fit=False)  # RTN fits by the weights alone
    b = fit_and_quantize(grid, W)
    assert torch.equal(a.codes, b.codes)
    assert all(torch.equal(a.params[k], b.params[k]) for k in b.params)


@pytest.mark.parametrize(
    "grid,act_order",
    [
        ("gguf:q4_0", False),
        ("gguf:q4_k", False),
        ("nvidia:w4a16", False),
        ("nvidia:w4a16", True),
        ("gguf:q4_k", True),
        ("gguf:nvfp4", False),
        ("gguf:nvfp4", True),
        ("gguf:mxfp4", True),
        ("nvidia:fp8", True),
    ],
)
def test_gptq_beats_rtn_on_output_error(grid, act_order):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    d, out = 512, 96
    # Without act_order, an outlier column that comes late cannot be compensated by any later column, so
    # the gain swings with where the outliers fall (0.58..0.94 over 40 seeds). Plain correlated inputs give a
    # steady gain (0.71..0.78 over 60 seeds); act_order handles outliers and gains 0.50..0.60 with them.
    X = _activations(2048, d, gen, outliers=4 if act_order else 0)
    W = torch.randn(out, d, generator=gen) * 0.02
    H = X.T @ X
    rtn = dequantize_weight(fit_and_quantize(grid, W))
    qw = gptq_quantize(W, H, grid, act_order=act_order)
    gq = dequantize_weight(qw)
    e_rtn, e_gptq = _out_err(X, W, rtn), _out_err(X, W, gq)
    assert e_gptq < (0.7 if act_order else 0.85) * e_rtn, (e_gptq, e_rtn)
    # every code is on the grid, and dequantization is what the grid computes
    g = get_grid(grid)
    assert qw.codes.min() >= g.qmin and qw.codes.max() <= g.qmax


@pytest.mark.parametrize("grid,act_order", [("gguf:q4_k", False), ("nvidia:w4a16", True), ("int8:channel", False)])
def test_linears_sharing_an_input_get_the_codes_of_one_call_each(grid, act_order):
    """q/k/v (or gate/up) read one input: H is factorised once for them, and each gets exactly what it gets alone."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    X = _activations(700, 512, gen)
    X[:, 5] = 0  # a dead input
    H = X.T @ X
    Ws = [torch.randn(rows, 512, generator=gen) * 0.02 for rows in (37, 11, 64)]
    shared = gptq_quantize_shared(Ws, H, grid, act_order=act_order)
    for W, got in zip(Ws, shared):
        alone = gptq_quantize(W, H, grid, act_order=act_order)
        assert got.shape == alone.shape == tuple(W.shape) and got.grid == alone.grid
        assert torch.equal(got.codes, alone.codes)
        assert all(torch.equal(got.params[k], alone.params[k]) for k in alone.params)


def test_a_hessian_that_is_not_positive_definite_is_one_clear_error():
    from edgekit.errors import EdgekitError
    from edgekit.quant.gptq import damped_inverse_cholesky

    H = torch.eye(64)
    H[3, 3] = -50.0  # damping (1% of the mean diagonal) cannot lift it
    with pytest.raises(EdgekitError, match="not positive definite even in float64"):
        damped_inverse_cholesky(H, 0.01)
    U = damped_inverse_cholesky(torch.eye(64) * 4, 0.0)  # UᵀU = H⁻¹
    assert U.dtype == torch.float32 and torch.allclose(U.T @ U, torch.eye(64) / 4)


def test_dead_inputs_and_odd_rows():
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    W = torch.randn(13, 256, generator=gen)
    X = torch.randn(300, 256, generator=gen)
    X[:, :7] = 0  # inputs that never fire
    qw = gptq_quantize(W, X.T @ X, "gguf:q8_0")
    assert qw.codes.shape == (13, 256)
    assert torch.all(dequantize_weight(qw)[:, :7] == 0)


@pytest.mark.parametrize("grid", ["gguf:q4_k", "gguf:q5_k"])
def test_importance_weighted_fit_lowers_the_importance_weighted_error(grid):
    """llama.cpp's importance-matrix rule on the K-quant grids: what important inputs see gets closer to the float
    weights, and the params stay what the format stores (6-bit sub-scales, fp16 super-scales: the gguf package
    dequantizes the packed blocks to exactly the grid's values)."""
    import gguf
    import numpy as np

    from edgekit.export.gguf_blocks import pack_blocks
    from edgekit.quant.grids import QuantizedWeight

    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    W = torch.randn(53, 768, generator=gen) * 0.02
    importance = torch.exp(1.5 * torch.randn(768, generator=gen))  # a few inputs matter far more than the rest
    g = get_grid(grid)
    errs = {}
    for name, imp in (("plain", None), ("weighted", importance)):
        p = g.fit(W, imp)
        assert int(p["sc"].max()) <= 63 and int(p["m"].max()) <= 63
        qw = QuantizedWeight(g.name, tuple(W.shape), g.quantize(W, p, 0), p)
        dq = dequantize_weight(qw)
        errs[name] = float((importance * (dq - W) ** 2).sum())
        ggml_type, blocks = pack_blocks(qw)
        ref = np.asarray(gguf.quants.dequantize(blocks, ggml_type), np.float32).reshape(W.shape)
        assert np.array_equal(ref, dq.numpy())
    assert errs["weighted"] < 0.9 * errs["plain"], errs


def _textbook_gptq(W, H, grid, params, damp=0.01):
    """GPTQ as the paper writes it (no lazy batches, no panels): each column's error updates every later column at
    once, in float64. The reference for the batched, panelled loop."""
    from edgekit.quant.gptq import damped_inverse_cholesky

    g = get_grid(grid)
    W = W.double().clone()
    U = damped_inverse_cholesky(H, damp).double()
    codes = torch.zeros(W.shape, dtype=torch.int16)
    for c in range(W.shape[1]):
        s, o = g.column_params(params, c, 1)
        w = W[:, c : c + 1].float()
        q = g.round_to(w, s, o)
        codes[:, c] = q[:, 0]
        err = (W[:, c : c + 1] - g.value_of(q, s, o).double()) / U[c, c]
        W[:, c:] -= err @ U[c : c + 1, c:]
    return codes


@pytest.mark.parametrize(
    "grid,rows,cols", [("nvidia:w4a16", 45, 384), ("gguf:q4_k", 29, 512), ("int8:channel", 17, 200)]
)
def test_batched_panelled_loop_is_the_textbook_algorithm(grid, rows, cols):
    """The column loop's lazy batches, 32-column panels and transposed layout only reorder GPTQ's sums: with the block
    parameters fixed, its codes are the textbook loop's. float32 against float64, a near-tie may round the other way
    and carry on along its row (over 40 seeds: >= 99.9% of codes, >= 94% of rows identical; with the panels' flush
    left out, <= 78% of codes and no row)."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    X = _activations(900, cols, gen)
    W = torch.randn(rows, cols, generator=gen) * 0.02
    H = X.T @ X
    params = get_grid(grid).fit(W)
    got = gptq_quantize(W, H, grid, params=params)
    want = _textbook_gptq(W, H, grid, params)
    same = got.codes == want
    assert same.float().mean() >= 0.99 and same.all(1).float().mean() >= 0.8
