"""`edgekit bench` end to end on the small checkpoint: the reference against itself, two bundles and a deliberately
broken one, 20 samples, through the console script; then the report's three outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require

require("llama_cpp")
require("onnxruntime")
require("matplotlib")

EDGEKIT = str(Path(sys.executable).with_name("edgekit"))
N_SAMPLES, NEW_TOKENS = 20, 8


def cli(*args, timeout=1200) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEKIT, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def zero_one_layer(bundle: Path, out: Path, layer: int = 1) -> Path:
    """A copy of a bundle whose decoder GGUF has every tensor of one layer zeroed (re-sealed, so it verifies):
    the layer then adds nothing to the residual stream."""
    from gguf import GGUFReader

    from edgekit.bundle.manifest import seal_manifest, sha256_file

    shutil.copytree(bundle, out)
    manifest = json.loads((out / "edgekit.json").read_text())
    rel = manifest["parts"]["decoder"]["path"]
    reader = GGUFReader(str(out / rel))
    spans = [(int(t.data_offset), int(t.n_bytes)) for t in reader.tensors if t.name.startswith(f"blk.{layer}.")]
    del reader
    assert len(spans) >= 7
    with open(out / rel, "r+b") as f:
        for offset, n in spans:
            f.seek(offset)
            f.write(bytes(n))
    manifest["artifacts"][rel]["sha256"] = sha256_file(out / rel)
    (out / "edgekit.json").write_text(json.dumps(seal_manifest(manifest)))
    return out


def _not_blank(png: Path) -> None:
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300, png
    non_white = (pixels < 240).any(axis=-1).mean()
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert non_white > 0.01 and colours > 20, f"{png}: {non_white:.3%} drawn, {colours} colours"


@pytest.mark.slow
def test_bench_two_bundles_on_20_samples(small_ckpt, small_bundles, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "domain": "driving", "task": "open_ended"}\n')
    out = tmp_path / "report"
    args = [
        "bench",
        small_bundles["int4"],
        small_bundles["fp16"],
        "--reference",
        small_ckpt,
        "--n",
        N_SAMPLES,
        "--max-new-tokens",
        NEW_TOKENS,
        "--out",
        out,
    ]

    # a malformed line stops the run before any model loads, naming file and line
    proc = cli(*args, "--samples", f"driving,embodied,{bad}", timeout=120)
    assert proc.returncode == 2 and f"{bad}:1" in proc.stderr and "--skip-bad" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()

    proc = cli(*args, "--samples", f"driving,embodied,{bad}", "--skip-bad", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    report = json.loads((out / "report.json").read_text())
    assert summary["rows"] == report["rows"] and report["schema"] == "edgekit.bench/1"
    assert report["samples"]["n"] == N_SAMPLES and report["samples"]["skipped_bad"] == 1
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["reference", "small-int4", "small-fp16"]
    kl = {name: r["fidelity"]["all"]["kl"]["mean"] for name, r in rows.items() if r["role"] == "variant"}
    assert 0 < kl["small-fp16"] < kl["small-int4"] and report["ranking_by_kl"] == ["small-fp16", "small-int4"]

    # per domain x task with counts and intervals; latency per stage; memory per worker
    for r in rows.values():
        acc = r["accuracy"]
        assert sum(acc[c]["n"] for c in acc if c.count("/") and not c.endswith("/all")) == N_SAMPLES
        assert {"driving/all", "embodied/all", "all"} <= set(acc)
        for stage in ("preprocess_s", "vision_s", "prefill_s", "ttft_s", "decode_s", "e2e_s"):
            assert 0 <= r["latency"][stage]["p50"] <= r["latency"][stage]["p99"], (r["name"], stage)
        assert r["latency"]["e2e_p50_ratio_to_reference"] > 0 and r["peak_rss_mb"] > 50
        if r["role"] == "variant":
            assert acc["all"]["delta"]["ci95"][0] <= acc["all"]["delta"]["mean"] <= acc["all"]["delta"]["ci95"][1]
            assert {"driving", "embodied", "all"} <= set(r["fidelity"])
    assert len(report["records"]) == N_SAMPLES * len(rows)
    # each pipeline's own peak memory: the float32 reference holds more than the INT4 bundle
    assert rows["reference"]["peak_rss_mb"] > rows["small-int4"]["peak_rss_mb"]

    md = (out / "report.md").read_text()
    assert "## Summary" in md and "small-int4" in md and "KL(FP‖row)" in md
    for name in ("accuracy_vs_latency.png", "latency_stages.png", "task_deltas.png"):
        _not_blank(out / name)

    # an --out that holds someone else's files is refused; an earlier report is replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    proc = cli("bench", "reference", "--reference", small_ckpt, "--n", 1, "--out", tmp_path / "mine", timeout=120)
    assert proc.returncode == 2 and "not an edgekit report" in proc.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_harness_is_sound_and_ranks_a_broken_variant_last(tiny_ckpt, tiny_bundle, tmp_path):
    """The reference against itself: agreement 1 and KL 0; a GGUF with one layer zeroed: KL far above the others."""
    from edgekit.bench.harness import BenchConfig, run_bench

    broken = zero_one_layer(tiny_bundle, tmp_path / "broken-int4")
    report = run_bench(
        BenchConfig(
            variants=("reference", str(tiny_bundle), str(broken)), reference=tiny_ckpt, n=10, max_new_tokens=NEW_TOKENS
        )
    )
    rows = {r["name"]: r for r in report["rows"]}
    self_fid = rows["reference (as variant)"]["fidelity"]["all"]
    assert self_fid["kl"]["mean"] < 1e-9 and self_fid["top1"]["mean"] == 1.0
    assert self_fid["whole_answer"]["mean"] == 1.0 and self_fid["first_token"]["mean"] == 1.0
    assert rows["reference (as variant)"]["accuracy"]["all"]["delta"]["mean"] == 0.0
    kl = {name: r["fidelity"]["all"]["kl"]["mean"] for name, r in rows.items() if r["role"] == "variant"}
    print("KL(FP‖variant):", {k: f"{v:.2e}" for k, v in kl.items()})
    assert report["ranking_by_kl"] == ["reference (as variant)", tiny_bundle.name, "broken-int4"]
    assert kl["broken-int4"] > 10 * kl[tiny_bundle.name]


def test_bundle_from_another_checkpoint_is_refused_before_loading(tiny_ckpt, small_bundles, tmp_path):
    proc = cli("bench", small_bundles["int4"], "--reference", tiny_ckpt, "--n", 2, "--out", tmp_path / "r", timeout=120)
    assert proc.returncode == 2 and "built from a model with" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("bench", tmp_path / "nope", "--reference", tiny_ckpt, "--out", tmp_path / "r", timeout=120)
    assert proc.returncode == 2 and "no such bundle directory" in proc.stderr
