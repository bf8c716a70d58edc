"""K-quant fitting speed at MiMo-Embodied-7B's shapes: edgekit's fits against llama.cpp's own quantizer.

For each K type (Q4_K, Q5_K, Q6_K; Q4_K and Q5_K also importance-weighted, as GPTQ/AWQ fit them), on float32
weights of the decoder's shapes (q_proj 4096 x 4096, gate_proj 11008 x 4096), side by side in one run:
- edgekit as it runs on a CPU (edgekit.quant.grids: llama.cpp's quantizer on every core): round to nearest
  (`fit_and_quantize`) reads block scales and codes back out of ggml's blocks; the importance-weighted fit (what GPTQ
  and AWQ run) reads the scales back and computes the codes from them in torch;
- edgekit's torch search (edgekit.quant.kquant_search: the path of an accelerator, or of an install without
  llama-cpp-python), run here on every core torch is given;
- llama.cpp: `ggml_quantize_chunk` from the installed libggml-base (edgekit.quant.ggml_quantize), on one thread and
  on every core (with the same importance where weighted).
Each is the best of --repeats runs, in M weights/s. Also the weighted squared error of each result (edgekit's
values; llama.cpp's bytes read back by the gguf package), so that speed is not bought with accuracy.

Regenerate:  python benchmarks/bench_kquant_fit.py [--repeats 3] [--json benchmarks/results/kquant_fit.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

SHAPES = {"q_proj": (4096, 4096), "gate_proj": (11008, 4096)}
TYPES = (("Q4_K", False), ("Q4_K", True), ("Q5_K", False), ("Q5_K", True), ("Q6_K", False))


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    import gguf

    from edgekit.quant import grids
    from edgekit.quant.ggml_quantize import quantize_rows
    from edgekit.quant.grids import QuantizedWeight, dequantize_weight, get_grid

    def searched_in_torch(fn):  # the fit an accelerator runs: grids without llama.cpp's library
        def run():
            loads, grids.llama_cpp_quantizer_loads = grids.llama_cpp_quantizer_loads, lambda: False
            try:
                return fn()
            finally:
                grids.llama_cpp_quantizer_loads = loads

        return run

    cores = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for shape_name, (out, n) in SHAPES.items():
        # columns of unequal scale and a few outlier channels, as in a trained decoder
        w = torch.randn(out, n, generator=gen) * (0.5 + torch.rand(1, n, generator=gen)) * 0.02
        w[:, torch.randperm(n, generator=gen)[:8]] *= 20
        imp_t = torch.rand(n, generator=gen) ** 4 + 1e-3
        w_np = w.numpy()
        for type_name, weighted in TYPES:
            g = get_grid(f"gguf:{type_name.lower()}")
            imp = imp_t if weighted else None

            def ours():  # round to nearest; weighted: the fit GPTQ and AWQ run, and codes from it
                if imp is None:
                    return grids.fit_and_quantize(g, w)
                p = g.fit(w, imp)
                return QuantizedWeight(g.name, tuple(w.shape), g.quantize(w, p, 0), p)

            t_ours, qw = _best(ours, args.repeats)
            t_search, qw_search = _best(searched_in_torch(ours), args.repeats)
            imp_np = None if imp is None else imp.numpy()
            t_one, ref = _best(lambda: quantize_rows(w_np, type_name, threads=1, importance=imp_np), args.repeats)
            t_all, _ = _best(lambda: quantize_rows(w_np, type_name, threads=cores, importance=imp_np), args.repeats)
            back = np.asarray(gguf.quants.dequantize(ref, gguf.GGMLQuantizationType[type_name]), np.float32)
            col_w = np.ones(n, np.float32) if imp is None else imp_np
            err_ours = float((((dequantize_weight(qw).numpy() - w_np) ** 2) * col_w).sum())
            err_search = float((((dequantize_weight(qw_search).numpy() - w_np) ** 2) * col_w).sum())
            err_ref = float((((back.reshape(out, n) - w_np) ** 2) * col_w).sum())
            m = w.numel() / 1e6
            rows.append(
                {
                    "shape": shape_name,
                    "rows": out,
                    "cols": n,
                    "type": type_name,
                    "importance": weighted,
                    "edgekit_mw_s": m / t_ours,
                    "torch_search_mw_s": m / t_search,
                    "ggml_1_thread_mw_s": m / t_one,
                    "ggml_all_mw_s": m / t_all,
                    "error_edgekit_over_ggml": err_ours / err_ref,
                    "error_torch_search_over_ggml": err_search / err_ref,
                }
            )
            r = rows[-1]
            print(
                f"{shape_name:9s} {type_name}{' imatrix' if weighted else '        '}  edgekit {r['edgekit_mw_s']:6.1f}"
                f"  torch search {r['torch_search_mw_s']:6.1f}  ggml 1 thread {r['ggml_1_thread_mw_s']:6.1f}  ggml {cores} threads {r['ggml_all_mw_s']:6.1f}"
                f"  M weights/s;  error edgekit/ggml {r['error_edgekit_over_ggml']:.4f}"
                f", torch search/ggml {r['error_torch_search_over_ggml']:.4f}",
                flush=True,
            )
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch_threads": cores},
        "rows": rows,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
