"""Every check that needs an NVIDIA GPU, in one run (issue 29): `bash scripts/gpu_check.sh [--out DIR]`.

Steps (each reports PASS / FAIL / SKIP with its numbers; one failing step does not stop the others):
  env        torch, CUDA, the GPU, nvcc, compute-sanitizer
  kernels    edgekit/kernels built for this GPU's architecture; every emulation-test case (edgekit/kernels/cases.py)
             on the GPU against float64
  sanitizer  compute-sanitizer memcheck over one launch of each kernel (ViT, decode f16 KV, decode INT8 KV)
  bench      edgekit/kernels/bench_kernels.py: fused kernels vs the measured copy bandwidth / fp16 rate and vs
             torch's scaled_dot_product_attention on the same shapes
  gptq       GPTQ (gguf:q4_k) of the small and medium presets on the CPU and on the GPU: share of identical codes,
             held-out KL(FP||Q) of both (fake-quantized weights in torch), wall time of each
  qat        one QAT distillation step (RTN init, phase 1 untrained) on the CPU and on the GPU: losses and scales
  build      wall time of the medium preset's default build for orin-agx-64 (GPTQ W4A16 + FP16 vision) with
             --device cuda, and with --device cpu on the same machine

Nothing is fetched: checkpoints are made here by `make-tiny`, samples are edgekit's built-in ones. CI runs two CPU
rehearsals: `--dry-run` resolves every step's inputs and stops before anything touches CUDA; `--rehearse` runs the
gptq, qat and build steps end to end with "cpu" standing in for the GPU on the tiny preset (so the script's own code
has run before the first GPU sees it). Writes summary.json and summary.md under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEPS = ("env", "kernels", "sanitizer", "bench", "gptq", "qat", "build")
PRESETS = ("small", "medium")


class Skip(Exception):
    """A step that cannot run here (the reason is reported, the run goes on)."""


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/local/cuda/bin/{name}",) if os.path.exists(p)), None)


def _edgekit(*args: str, timeout: int) -> float:
    """Run the edgekit CLI from this checkout; returns wall seconds, raises with the output's tail on failure."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if r.returncode != 0:
        raise RuntimeError(f"edgekit {' '.join(args[:2])}: exit {r.returncode}: " + (r.stderr or r.stdout)[-400:])
    return time.perf_counter() - t0


def _checkpoint(ctx, preset: str) -> Path:
    from edgekit.model.fixtures import make_tiny

    path = ctx.work / f"ckpt-{preset}"
    if not (path / "config.json").is_file():
        make_tiny(path, preset=preset)
    return path


# ---- steps -----------------------------------------------------------------------------------------


def step_env(ctx) -> dict:
    import torch

    info = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "nvcc": _tool("nvcc"),
        "compute_sanitizer": _tool("compute-sanitizer"),
    }
    if ctx.dry_run or ctx.rehearse:
        return info
    if not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA GPU")
    cap = torch.cuda.get_device_capability()
    info.update(
        gpu=torch.cuda.get_device_name(),
        sm=f"{cap[0]}{cap[1]}",
        memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
    )
    ctx.arch = f"{cap[0]}{cap[1]}"
    return info


def _library(ctx):
    from edgekit.kernels.attention import KernelLibrary, build_library

    if ctx.library is None:
        path = build_library(ctx.work / "kernels", cuda=True, cuda_archs=f"{ctx.arch}-real")
        ctx.library = (path, KernelLibrary(path, gpu=True))
    return ctx.library


def step_kernels(ctx) -> dict:
    import numpy as np

    from edgekit.kernels.cases import DECODE_CASES, REL_TOL, VIT_CASES, check_decode, check_vit

    sources = REPO / "edgekit" / "kernels" / "CMakeLists.txt"
    if not sources.is_file() or shutil.which("cmake") is None:
        raise RuntimeError(f"need {sources} and cmake")
    if ctx.dry_run:
        return {"cases": len(VIT_CASES) + len(DECODE_CASES), "nvcc": _tool("nvcc") or "not here"}
    if ctx.rehearse:
        raise Skip("needs a GPU (the CPU emulation tests run these cases)")
    if _tool("nvcc") is None:
        raise Skip("nvcc not found")
    _, lib = _library(ctx)
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    errors = {}
    for windows, heads, head_dim in VIT_CASES:
        errors[f"vit {len(windows)} windows, {sum(windows)} tokens, {heads}x{head_dim}"] = check_vit(
            lib, rng, windows, heads, head_dim, f"seed {seed}"
        )
    for lens, hq, hkv, splits, int8 in DECODE_CASES:
        errors[f"decode lens {lens}, {hq}/{hkv} heads, {splits} splits, {'INT8' if int8 else 'f16'}"] = check_decode(
            lib, rng, lens, hq, hkv, splits, int8, f"seed {seed}"
        )
    return {"seed": seed, "bar": REL_TOL, "worst_rel_err": max(errors.values()), "rel_err": errors}


def sanitizer_child(lib_path: str) -> int:
    """Under compute-sanitizer: one launch of each kernel on small inputs."""
    import numpy as np

    from edgekit.kernels.attention import KernelLibrary
    from edgekit.kernels.cases import check_decode, check_vit

    lib, rng = KernelLibrary(Path(lib_path), gpu=True), np.random.default_rng(0)
    check_vit(lib, rng, [64, 37], 2, 80, "sanitizer")
    check_decode(lib, rng, [300], 8, 2, 3, False, "sanitizer")
    check_decode(lib, rng, [300], 8, 2, 3, True, "sanitizer")
    return 0


def step_sanitizer(ctx) -> dict:
    tool = _tool("compute-sanitizer")
    if tool is None:
        raise Skip("compute-sanitizer not found")
    if ctx.dry_run:
        return {"tool": tool}
    if ctx.rehearse:
        raise Skip("needs a GPU")
    path, _ = _library(ctx)
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    r = subprocess.run(
        [tool, "--tool", "memcheck", "--error-exitcode", "9", sys.executable, __file__, "--sanitizer-child", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    summary = next((ln.strip() for ln in reversed(r.stdout.splitlines()) if "ERROR SUMMARY" in ln), "no summary")
    if r.returncode != 0:
        raise RuntimeError(f"memcheck exit {r.returncode}: {summary}; " + r.stdout[-400:])
    return {"summary": summary, "launches": "vit, decode f16, decode INT8"}


def step_bench(ctx) -> dict:
    script = REPO / "edgekit" / "kernels" / "bench_kernels.py"
    if ctx.dry_run:
        return {"script": str(script)}
    if ctx.rehearse:
        raise Skip("needs a GPU")
    path, _ = _library(ctx)
    out = ctx.work / "bench_kernels.json"
    env = dict(os.environ, EDGEKIT_KERNELS_LIB=str(path))
    r = subprocess.run(
        [sys.executable, str(script), "--json", str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    if r.returncode != 0:
        raise RuntimeError(f"bench_kernels.py exit {r.returncode}: " + (r.stderr or r.stdout)[-400:])
    print(r.stdout)
    return json.loads(out.read_text())


def _codes_agreement(a, b) -> float:
    same = total = 0
    for name, qa in a.quantized.items():
        qb = b.quantized[name]
        same += int((qa.codes == qb.codes).sum())
        total += qa.codes.numel()
    return same / total


def step_gptq(ctx) -> dict:
    from edgekit.quant.calibrate import QuantConfig, calibrate
    from edgekit.quant.evaluate import kl_against_reference

    from edgekit.data.calibration_mix import counts
    from edgekit.model.fixtures import PRESETS as KNOWN

    cfg = QuantConfig(method="gptq", grid="gguf:q4_k", n_samples=ctx.n_samples)
    missing = [p for p in ctx.presets if p not in KNOWN]
    if missing:
        raise RuntimeError(f"make-tiny has no preset {missing}")
    if ctx.dry_run:
        return {"presets": list(ctx.presets), "config": cfg.key(), "samples": counts(cfg.n_samples, False, 64)}
    out = {}
    for preset in ctx.presets:
        ckpt = _checkpoint(ctx, preset)
        results, seconds = {}, {}
        for label, device in (("cpu", "cpu"), ("gpu", ctx.gpu)):
            t0 = time.perf_counter()
            results[label] = calibrate(ckpt, cfg, ctx.work / f"calib-{preset}-{label}", device=device)
            seconds[label] = round(time.perf_counter() - t0, 1)
        kl = kl_against_reference(ckpt, results, cfg, n_eval=ctx.n_eval, device=ctx.gpu)
        out[preset] = {
            "identical_codes": _codes_agreement(results["cpu"], results["gpu"]),
            "seconds": seconds,
            "kl_cpu": kl["cpu"]["kl"],
            "kl_gpu": kl["gpu"]["kl"],
            "top1_cpu": kl["cpu"]["top1"],
            "top1_gpu": kl["gpu"]["top1"],
        }
    return out


def step_qat(ctx) -> dict:
    from edgekit.metrics import relative_error
    from edgekit.qat.run import QATSettings, run_qat
    from edgekit.quant.formats import parse
    from edgekit.quant.trained import qat_result

    fmt = parse("gguf:q4_k")
    settings = QATSettings(fmt, init="rtn", n_samples=8, steps=1, block_epochs=0, batch=4)
    if ctx.dry_run:
        return {"settings": settings.identity()}
    ckpt = _checkpoint(ctx, ctx.presets[0])
    records, trained = {}, {}
    for label, device in (("cpu", "cpu"), ("gpu", ctx.gpu)):
        out = ctx.work / f"qat-{label}"
        shutil.rmtree(out, ignore_errors=True)
        records[label] = run_qat(ckpt, out, settings, ctx.work / f"qat-cache-{label}", device=device)
        trained[label] = qat_result(out, fmt.grid_name, ())
    loss = {d: r["losses"]["distill_first"][0] for d, r in records.items()}
    scale_err = max(
        relative_error(trained["gpu"].quantized[n].params[k], p)
        for n, q in trained["cpu"].quantized.items()
        for k, p in q.params.items()
    )
    return {
        "distill_loss": loss,
        "loss_rel_diff": abs(loss["cpu"] - loss["gpu"]) / max(abs(loss["cpu"]), 1e-30),
        "identical_codes": _codes_agreement(trained["cpu"], trained["gpu"]),
        "worst_scale_rel_diff": scale_err,
    }


def step_build(ctx) -> dict:
    from edgekit.targets import get_target

    preset = ctx.presets[-1]
    target = get_target("orin-agx-64").name
    if ctx.dry_run:
        return {"command": f"edgekit build ckpt-{preset} --target {target} --device {ctx.gpu}|cpu"}
    ckpt = _checkpoint(ctx, preset)
    out = {"preset": preset}
    for label, device in (("gpu", ctx.gpu), ("cpu", "cpu")):
        bundle = ctx.work / f"bundle-{preset}-{label}"
        shutil.rmtree(bundle, ignore_errors=True)
        out[f"seconds_{label}"] = round(
            _edgekit(
                "build",
                str(ckpt),
                "--target",
                target,
                "--device",
                device,
                "--out",
                str(bundle),
                "--calib-cache",
                str(ctx.work / f"build-cache-{label}"),
                timeout=420,
            ),
            1,
        )
    return out


STEP_FNS = {
    "env": step_env,
    "kernels": step_kernels,
    "sanitizer": step_sanitizer,
    "bench": step_bench,
    "gptq": step_gptq,
    "qat": step_qat,
    "build": step_build,
}


class Context:
    def __init__(self, args):
        self.work, self.dry_run, self.rehearse = args.work, args.dry_run, args.rehearse
        self.n_samples, self.n_eval = args.n_samples, args.n_eval
        self.gpu = "cpu" if args.rehearse else "cuda"  # the rehearsal's stand-in for the GPU
        self.presets = ("tiny",) if args.rehearse else PRESETS
        self.arch, self.library = None, None


def summary_table(results: dict) -> str:
    lines = ["| step | status | seconds | result |", "|---|---|---|---|"]
    for name, r in results.items():
        detail = r.get("error") or json.dumps(
            {k: v for k, v in r.items() if k not in ("status", "seconds", "rows", "rel_err")}, default=str
        )
        lines.append(f"| {name} | {r['status']} | {r.get('seconds', '')} | {detail[:300]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="resolve every step's inputs; touch no GPU")
    ap.add_argument(
        "--rehearse",
        action="store_true",
        help="run the gptq, qat and build steps on the CPU (tiny preset), 'cpu' standing in for the GPU",
    )
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekit-gpu-check"), help="scratch folder")
    ap.add_argument("--out", type=Path, default=None, help="folder for summary.json and summary.md")
    ap.add_argument("--n-samples", type=int, default=16, help="calibration samples for the gptq step")
    ap.add_argument("--n-eval", type=int, default=8, help="held-out samples for KL in the gptq step")
    ap.add_argument("--sanitizer-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sanitizer_child:
        return sanitizer_child(args.sanitizer_child)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"gpu_check: unknown step(s) {unknown}; choose from {', '.join(STEPS)}", file=sys.stderr)
        return 2
    if "env" not in steps:
        steps.insert(0, "env")  # the others need the architecture it reads
    args.work.mkdir(parents=True, exist_ok=True)
    ctx, results = Context(args), {}
    for name in steps:
        t0 = time.perf_counter()
        try:
            r = {
                "status": "DRY-RUN" if args.dry_run else "REHEARSED" if args.rehearse else "PASS",
                **STEP_FNS[name](ctx),
            }
        except Skip as e:
            r = {"status": "SKIP", "error": str(e)}
        except Exception as e:  # one failing step must not hide the others' results
            r = {"status": "FAIL", "error": f"{type(e).__name__}: {e}".replace("\n", " ")[:600]}
        r["seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = r
        print(f"[{name}] {r['status']} in {r['seconds']} s", flush=True)
    table = summary_table(results)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(results, indent=1, default=str))
        (args.out / "summary.md").write_text(table + "\n")
    return 1 if any(r["status"] == "FAIL" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
