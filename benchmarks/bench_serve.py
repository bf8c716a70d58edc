"""Load test: `edgekit serve` against llama.cpp's own `llama-server --jinja --mmproj` on the same GGUF decoder and mmproj,
under the same load, one after the other in one run (loopback only; it stops by itself).

Each server gets N requests (one camera image as a data: URL and a question, greedy, M new tokens) from K client
threads; reported per server: p50 / p99 latency, requests per second, generated tokens per second, prompt tokens
answered from the KV cache, and the count of requests that got no answer, an error, or an answer different from the
first (greedy: every answer must be the same text). edgekit serves the bundle's ONNX vision graph, llama-server the
bundle's mmproj: the decoder file is the same. Each server runs once per --parallel setting (edgekit `--parallel P`,
llama-server `-np P --kv-unified`, both with a KV cache of P x 4096 cells; 0: each server's own defaults, llama-server
`-c 4096` and its automatic slots).

Regenerate:  python benchmarks/bench_serve.py --preset medium --requests 64 --clients 8 --max-tokens 16 \
                 --parallel 0,1,8 --json benchmarks/results/serve/serve.json
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
EDGEKIT = str(Path(sys.executable).parent / "edgekit")
IMAGE = REPO / "edgekit" / "data" / "assets" / "driving_0_001.png"
QUESTION = "What should the car do at this traffic light?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, path: str, timeout: float = 300) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no answer on :{port}{path}")


def load(port: int, model: str, n: int, clients: int, max_tokens: int) -> dict:
    import http.client

    body = json.dumps(
        {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": 0,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": "data:image/png;base64," + base64.b64encode(IMAGE.read_bytes()).decode()
                            },
                        },
                        {"type": "text", "text": QUESTION},
                    ],
                }
            ],
        }
    ).encode()
    results: list[tuple[float, int, str, int]] = []
    lock, todo = threading.Lock(), list(range(n))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = json.loads(r.read())
                status = r.status
            except (OSError, ValueError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                status, data = 0, {}
            text = data.get("choices", [{}])[0].get("message", {}).get("content", "") if status == 200 else ""
            usage = data.get("usage", {}) if status == 200 else {}
            tokens = usage.get("completion_tokens", 0)
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            with lock:
                results.append((time.perf_counter() - t0, status, text, tokens, cached))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r[1] == 200]
    first = ok[0][2] if ok else None
    lat = np.array([r[0] for r in ok]) if ok else np.array([np.nan])
    return {
        "requests": n,
        "answered": len(ok),
        "errors": n - len(ok),
        "different_answers": sum(r[2] != first for r in ok),
        "p50_s": round(float(np.percentile(lat, 50)), 3),
        "p99_s": round(float(np.percentile(lat, 99)), 3),
        "mean_s": round(float(lat.mean()), 3),
        "requests_per_s": round(len(ok) / wall, 3),
        "tokens_per_s": round(sum(r[3] for r in ok) / wall, 2),
        "wall_s": round(wall, 1),
        "cached_prompt_tokens_mean": round(float(np.mean([r[4] for r in ok])), 1) if ok else 0,
        "answer": first,
    }


def main() -> None:
    from llama_tools import tools_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--bundle", type=Path, default=None, help="an existing CPU GGUF bundle (default: build one)")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument(
        "--parallel",
        default="0,1,8",
        help="comma-separated slot counts, each run on both servers (0: the servers' defaults)",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-serve-"))
    bundle = args.bundle
    if bundle is None:
        subprocess.run(
            [EDGEKIT, "make-tiny", str(work / "ckpt"), "--preset", args.preset], check=True, capture_output=True
        )
        bundle = work / "bundle"
        subprocess.run(
            [
                EDGEKIT,
                "build",
                str(work / "ckpt"),
                "--target",
                "cpu",
                "--precision",
                "int4",
                "--method",
                "rtn",
                "--out",
                str(bundle),
                "--calib-cache",
                str(work / "cache"),
            ],
            check=True,
            capture_output=True,
        )
    server = tools_dir() / "llama-server"
    rows = {}
    for parallel in [int(x) for x in args.parallel.split(",")]:
        for kind in ("edgekit serve", "llama-server"):
            port = free_port()
            slots = ["--parallel" if kind == "edgekit serve" else "-np", str(parallel)]
            name = f"{kind} {' '.join(slots)}" if parallel else f"{kind} (defaults)"
            flags = (
                []
                if not parallel
                else slots
                if kind == "edgekit serve"
                else [*slots, "-c", str(4096 * parallel), "--kv-unified"]
            )
            log = open(work / f"{kind.replace(' ', '-')}-{parallel}.log", "wb")
            if kind == "edgekit serve":
                cmd = [
                    EDGEKIT,
                    "serve",
                    str(bundle),
                    "--port",
                    str(port),
                    "--threads",
                    str(args.threads),
                    "--model-name",
                    "mimo",
                    "--max-queue",
                    str(args.requests),
                    *flags,
                ]
            else:
                cmd = [
                    str(server),
                    "-m",
                    str(bundle / "decoder" / "decoder.gguf"),
                    "--mmproj",
                    str(bundle / "decoder" / "mmproj.gguf"),
                    "--jinja",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "-t",
                    str(args.threads),
                    *(flags or ["-c", "4096"]),
                    "--no-webui",
                ]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_ready(port, proc, "/health")
                load(port, "mimo", 2, 1, args.max_tokens)  # warm-up
                rows[name] = load(port, "mimo", args.requests, args.clients, args.max_tokens)
            finally:
                proc.terminate()
                proc.wait(timeout=120)
            print(name, json.dumps(rows[name]))
    best = {
        kind: min(r["p50_s"] for n, r in rows.items() if n.startswith(kind)) for kind in ("edgekit", "llama-server")
    }
    report = {
        "bundle": str(bundle),
        "requests": args.requests,
        "clients": args.clients,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "rows": rows,
        "best_p50_ratio_edgekit_over_llama_server": round(best["edgekit"] / best["llama-server"], 3),
    }
    print(
        "\n| server | p50 s | mean s | p99 s | requests/s | tokens/s | cached prompt tokens | errors | different answers |"
        "\n|---|---|---|---|---|---|---|---|---|"
    )
    for name, r in rows.items():
        print(
            f"| {name} | {r['p50_s']} | {r['mean_s']} | {r['p99_s']} | {r['requests_per_s']} | {r['tokens_per_s']} | "
            f"{r['cached_prompt_tokens_mean']} | {r['errors']} | {r['different_answers']} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
