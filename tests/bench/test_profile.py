"""`edgekit profile` on the tiny checkpoint's bundle: stage percentiles, roofline, load, tuning recorded and used."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from conftest import require

require("llama_cpp")
require("onnxruntime")

EDGEKIT = str(Path(sys.executable).with_name("edgekit"))


def test_synthetic_inputs_have_the_asked_sizes(tiny_bundle):
    from edgekit.bench.profile import ProfileConfig, synthetic_inputs
    from edgekit.bundle.manifest import read_manifest
    from edgekit.model.prompt import load_tokenizer

    manifest = read_manifest(tiny_bundle)
    for n in (1, 17, 64):
        question, images = synthetic_inputs(
            tiny_bundle, manifest, ProfileConfig(tiny_bundle, prompt_tokens=n, image_size=(333, 517))
        )
        tokens = len(load_tokenizer(tiny_bundle / "tokenizer" / "tokenizer.json").encode(question).ids)
        assert abs(tokens - n) <= 1, (n, tokens)  # cut at n ids; re-encoding may merge one pair
        assert [im.size for im in images] == [(333, 517)]


def test_profile_cli_alone_and_under_load(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_RUNTIME_SETTINGS", str(tmp_path / "settings.json"))
    proc = subprocess.run(
        [
            EDGEKIT,
            "profile",
            str(tiny_bundle),
            "--runs",
            "3",
            "--warmup",
            "1",
            "--prompt-tokens",
            "16",
            "--gen-tokens",
            "8",
            "--background-load",
            "1",
            "--csv",
            str(tmp_path / "runs.csv"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    p = json.loads(proc.stdout)
    assert p["schema"] == "edgekit.profile/1" and p["prompt_tokens"] > 16  # + chat template and image tokens
    for stage in ("preprocess_s", "vision_s", "prefill_s", "ttft_s", "decode_s", "e2e_s"):
        a = p["alone"][stage]
        assert 0 <= a["p50"] <= a["p90"] <= a["p99"], stage
    assert p["alone"]["jitter_p99_over_p50"] >= 1.0 and p["alone"]["decode_tokens_per_s"]["p50"] > 0
    r = p["roofline"]
    assert r["read_bandwidth_gb_s"] > 0.5 and r["bytes_per_token_mb"] > 0 and 0 < r["fraction"] < 2
    assert p["under_load"]["processes"] == 1 and p["under_load"]["slowdown_e2e_p50"] > 0
    assert "tegrastats not found" in p["tegrastats"]  # no Jetson here: said, not faked
    with open(tmp_path / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["phase"] for r in rows] == ["alone"] * 3 + ["load 1"] * 3
    assert all(int(r["tokens"]) == 8 for r in rows)  # exactly --gen-tokens: end-of-text does not stop a profile


def test_tuning_is_recorded_and_used_by_open_bundle(tiny_bundle, tmp_path, monkeypatch):
    from edgekit.bench.profile import ProfileConfig, run_profile, tune_candidates
    from edgekit.runtime.bundle_pipeline import open_bundle
    from edgekit.cores import available_cores
    from edgekit.runtime.settings import ThreadSettings, lookup

    monkeypatch.setenv("EDGEKIT_RUNTIME_SETTINGS", str(tmp_path / "settings.json"))
    monkeypatch.setenv("OMP_WAIT_POLICY", "")  # open_bundle may set it in this process: undone after the test
    result = run_profile(
        ProfileConfig(tiny_bundle, runs=2, warmup=0, prompt_tokens=8, gen_tokens=4, tune=True, tune_runs=1)
    )
    trials, chosen = result["tuning"]["trials"], result["tuning"]["chosen"]
    assert len(trials) == len(tune_candidates(available_cores()))
    best = min(trials, key=lambda t: (t["e2e_p50_s"], t["e2e_p99_s"]))
    assert chosen == {"threads": best["threads"], "omp_wait_policy": best["omp_wait_policy"]}
    seal = json.loads((tiny_bundle / "edgekit.json").read_text())["seal"]["sha256"]
    assert lookup(seal) == ThreadSettings(**chosen)
    assert result["threads"].startswith(f"{chosen['threads']} thread")  # the measured runs used it
    pipe = open_bundle(tiny_bundle)
    try:
        assert pipe.settings == ThreadSettings(**chosen)
    finally:
        pipe.close()
    assert open_bundle(tiny_bundle, n_threads=1).settings == ThreadSettings(1)  # an explicit count wins
