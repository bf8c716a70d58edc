"""`edgekit serve` (issue 30) as a client sees it: the server in a subprocess on a free loopback port, driven by OpenAI's
own Python client (pinned in .ci/constraints.txt) and, for what a client library would not send, raw HTTP.

Answers are compared with `edgekit run --bundle` on the same image and prompt (greedy: the same tokens)."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

EDGEKIT = str(Path(sys.executable).parent / "edgekit")
ASSETS = Path(__file__).resolve().parents[2] / "edgekit" / "data" / "assets"
IMAGE, IMAGE2 = ASSETS / "driving_0_001.png", ASSETS / "driving_0_002.png"
KEY = "test-key-0123456789abcdef"
PROMPT = "What should the car do at this traffic light?"


class Server:
    def __init__(self, bundle: Path, tmp: Path, *extra: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        keys = tmp / "keys"
        keys.write_text(f"# the test's key\n{KEY}\n")
        self.log = tmp / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [
                EDGEKIT,
                "serve",
                str(bundle),
                "--port",
                str(self.port),
                "--api-key-file",
                str(keys),
                "--threads",
                "1",
                "--model-name",
                "mimo",
                *extra,
            ],
            stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if self.request("GET", "/health", auth=False)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail("server did not answer /health in 120 s: " + self.log.read_text()[-2000:])

    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict | None = None,
        *,
        auth: bool | str = True,
        headers: dict | None = None,
        timeout: float = 120,
    ):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if auth:
            h["Authorization"] = f"Bearer {KEY if auth is True else auth}"
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data, dict(r.getheaders())

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=KEY, max_retries=0, timeout=120)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.returncode


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def user(text: str, *images: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                *({"type": "image_url", "image_url": {"url": u}} for u in images),
                {"type": "text", "text": text},
            ],
        }
    ]


def run_bundle(bundle: Path, prompt: str, images: list[Path], max_new_tokens: int, think: bool = False) -> str:
    args = [
        EDGEKIT,
        "run",
        "--bundle",
        str(bundle),
        "--prompt",
        prompt,
        "--max-new-tokens",
        str(max_new_tokens),
        "--json",
        "--threads",
        "1",
        "--think" if think else "--no-think",
    ]
    for im in images:
        args += ["--image", str(im)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)["answer"]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("images")
    (d / "cam.png").write_bytes(IMAGE.read_bytes())
    (d / "escape.png").symlink_to(IMAGE)  # a link out of the folder: refused like a path outside it
    return d


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory, image_dir):
    srv = Server(
        tiny_bundle,
        tmp_path_factory.mktemp("serve"),
        "--max-body-mb",
        "1",
        "--image-dir",
        str(image_dir),
        "--max-pixels",
        "4000000",
    )
    yield srv
    assert srv.stop() == 0, srv.log.read_text()[-2000:]


def test_greedy_answer_equals_run_and_stream_equals_plain(server, tiny_bundle):
    want = run_bundle(tiny_bundle, PROMPT, [IMAGE], 24)
    client = server.client()
    plain = client.chat.completions.create(
        model="mimo", messages=user(PROMPT, data_url(IMAGE)), max_tokens=24, temperature=0
    )
    assert plain.choices[0].message.content == want
    assert plain.usage.completion_tokens == 24 and plain.choices[0].finish_reason == "length"
    chunks = list(
        client.chat.completions.create(model="mimo", messages=user(PROMPT, data_url(IMAGE)), max_tokens=24, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
    assert chunks[-1].usage.completion_tokens == 24 and chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    # the second time, the system prompt and the frame's cells came from the KV cache (and the answer is still run's)
    n_image = plain.usage.prompt_tokens - chunks[-1].usage.prompt_tokens_details.cached_tokens
    assert 0 < n_image < plain.usage.prompt_tokens // 2, chunks[-1].usage


def test_parallel_slots_answer_side_by_side(tiny_bundle, tmp_path):
    """--parallel 3: requests decoded together in one batch per token, each answered in full, the same frame reused
    from another slot's cells."""
    srv = Server(tiny_bundle, tmp_path, "--parallel", "3")
    try:
        asks = [(PROMPT, IMAGE), ("Is anyone crossing?", IMAGE), ("What is ahead?", IMAGE2), (PROMPT, IMAGE)]
        results = [None] * len(asks)

        def ask(i):
            q, im = asks[i]
            results[i] = srv.client().chat.completions.create(
                model="mimo", messages=user(q, data_url(im)), max_tokens=40, temperature=0
            )

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(asks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert all(r is not None and r.choices[0].finish_reason in ("length", "stop") for r in results)
        assert sum(r.usage.prompt_tokens_details.cached_tokens > 0 for r in results) >= 2
        deadline = time.monotonic() + 10  # the worker marks its slots free right after the last answer's event
        while True:
            depth = [
                ln
                for ln in srv.request("GET", "/metrics")[1].decode().splitlines()
                if ln.startswith("edgekit_queue_depth ")
            ]
            if depth == ["edgekit_queue_depth 0.0"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert depth == ["edgekit_queue_depth 0.0"], depth
    finally:
        assert srv.stop() == 0


def test_mmproj_serving_answers_like_run_vision_mmproj(tiny_bundle, tmp_path):
    """--vision mmproj: everything in llama.cpp (the C++ host's path); greedy equals `edgekit run --vision mmproj`."""
    srv = Server(tiny_bundle, tmp_path, "--vision", "mmproj")
    try:
        got = srv.client().chat.completions.create(model="mimo", messages=user(PROMPT, data_url(IMAGE)), max_tokens=16)
        proc = subprocess.run(
            [
                EDGEKIT,
                "run",
                "--bundle",
                str(tiny_bundle),
                "--vision",
                "mmproj",
                "--image",
                str(IMAGE),
                "--prompt",
                PROMPT,
                "--max-new-tokens",
                "16",
                "--threads",
                "1",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert got.choices[0].message.content == json.loads(proc.stdout)["answer"]
    finally:
        assert srv.stop() == 0


def test_local_image_under_the_allowed_folder_and_the_embedding_cache(server, image_dir):
    client = server.client()

    def hits() -> float:
        lines = server.request("GET", "/metrics")[1].decode().splitlines()
        return float(next(ln.split()[-1] for ln in lines if ln.startswith("edgekit_image_cache_hits ")))

    before = hits()
    a = client.chat.completions.create(model="mimo", messages=user(PROMPT, str(image_dir / "cam.png")), max_tokens=8)
    b = client.chat.completions.create(model="mimo", messages=user(PROMPT, data_url(IMAGE)), max_tokens=8)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert hits() >= before + 1  # the same pixels: encoded once


def test_thinking_on_and_off_split_like_the_model_wrote_it(server, tiny_bundle):
    from edgekit.serve.text_stream import ThinkSplitter

    client = server.client()
    for think in (False, True):
        text = run_bundle(tiny_bundle, PROMPT, [], 20, think=think)
        splitter = ThinkSplitter()
        r1, c1 = splitter.feed(text)
        r2, c2 = splitter.finish()
        kwargs = {"extra_body": {"chat_template_kwargs": {"enable_thinking": think}}}
        got = client.chat.completions.create(model="mimo", messages=user(PROMPT), max_tokens=20, **kwargs)
        msg = got.choices[0].message
        assert (getattr(msg, "reasoning_content", None) or "", msg.content) == (r1 + r2, c1 + c2), think
        chunks = list(
            client.chat.completions.create(model="mimo", messages=user(PROMPT), max_tokens=20, stream=True, **kwargs)
        )
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == r1 + r2
        assert "".join(d.content or "" for d in deltas) == c1 + c2
    # MiMo's own switch: " /no_think" in the text turns thinking off whatever the kwargs say
    off = client.chat.completions.create(
        model="mimo",
        messages=user(PROMPT + " /no_think"),
        max_tokens=20,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}},
    )
    assert off.choices[0].message.content == run_bundle(tiny_bundle, PROMPT, [], 20, think=False)


def test_engine_splits_a_think_block_as_it_streams(tiny_bundle):
    """In-process: a grammar forces the model to write a think block, so the split of real decoded tokens is seen."""
    from edgekit.runtime.bundle_pipeline import open_bundle
    from edgekit.serve.engine import Engine, Job, Params

    pipe = open_bundle(tiny_bundle, n_threads=1)
    engine = Engine(pipe, max_queue=2, cache_bytes=1 << 20)
    try:
        events, done = [], threading.Event()

        def emit(ev):
            events.append(ev)
            if ev[0] != "delta":
                done.set()

        gbnf = 'root ::= "<think>" [a-z ]{3,12} "</think>" "\\n\\n" [a-z]{2,9}'
        engine.submit(
            Job([("user", [PROMPT])], [], Params(max_tokens=60, gbnf=gbnf, think=True), emit, time.monotonic() + 120)
        )
        assert done.wait(120) and events[-1][0] == "done", events[-1:]
        reasoning = "".join(e[1] for e in events if e[0] == "delta")
        content = "".join(e[2] for e in events if e[0] == "delta")
        assert 3 <= len(reasoning) <= 12 and set(reasoning) <= set("abcdefghijklmnopqrstuvwxyz ")
        assert 2 <= len(content) <= 9 and content.isalpha() and "<" not in reasoning + content
        assert len([e for e in events if e[0] == "delta"]) > 2  # arrived in pieces, split across them
    finally:
        engine.close()
        pipe.close()


def test_json_schema_answer_parses_and_validates(server):
    schema = {
        "type": "object",
        "properties": {
            "point": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            "label": {"type": "string", "maxLength": 8},
        },
        "required": ["point", "label"],
        "additionalProperties": False,
    }
    client = server.client()
    got = client.chat.completions.create(
        model="mimo",
        messages=user("Point to the traffic light.", data_url(IMAGE)),
        max_tokens=300,
        response_format={"type": "json_schema", "json_schema": {"name": "pointing", "schema": schema}},
    )
    answer = json.loads(got.choices[0].message.content)
    assert set(answer) == {"point", "label"} and isinstance(answer["label"], str) and len(answer["label"]) <= 8
    assert len(answer["point"]) == 2 and all(isinstance(v, int) for v in answer["point"])


@pytest.fixture(scope="module")
def two_camera_bundle(tmp_path_factory, tiny_ckpt) -> Path:
    from edgekit.bundle.build import BuildConfig, build_bundle

    return build_bundle(
        tiny_ckpt,
        tmp_path_factory.mktemp("two-cam") / "b",
        BuildConfig(target="cpu", precision="int4", method="rtn", images=2),
    )


def test_two_cameras_in_one_message(two_camera_bundle, tmp_path):
    srv = Server(two_camera_bundle, tmp_path)
    try:
        got = srv.client().chat.completions.create(
            model="mimo", messages=user(PROMPT, data_url(IMAGE), data_url(IMAGE2)), max_tokens=16
        )
        assert got.choices[0].message.content == run_bundle(two_camera_bundle, PROMPT, [IMAGE, IMAGE2], 16)
    finally:
        assert srv.stop() == 0


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (a decompression bomb's header): refused before any pixel is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _b64(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


GOOD = {"model": "mimo", "messages": user("Describe the scene."), "max_tokens": 4}
BAD = [  # (name, body or raw bytes, auth, status, error type)
    ("invalid base64", {**GOOD, "messages": user("x", "data:image/png;base64,@@@notbase64@@@")}, True, 400, None),
    ("not an image", {**GOOD, "messages": user("x", _b64(b"hello, not a picture"))}, True, 400, None),
    ("20000x20000 png", {**GOOD, "messages": user("x", _b64(_png_header(20000, 20000)))}, True, 400, None),
    ("body over the limit", {**GOOD, "pad": "x" * (1 << 21)}, True, 413, None),
    ("no key", GOOD, False, 401, "invalid_api_key"),
    ("wrong key", GOOD, "wrong-key-0123456789abcdef", 401, "invalid_api_key"),
    ("unknown model", {**GOOD, "model": "gpt-4o"}, True, 404, "model_not_found"),
    ("malformed JSON", b'{"model": "mimo", "messages": [', True, 400, None),
    ("duplicate key", b'{"model": "mimo", "model": "mimo", "messages": []}', True, 400, None),
    ("path outside the folder", {**GOOD, "messages": user("x", "/etc/hostname")}, True, 400, None),
    ("dot-dot path", {**GOOD, "messages": user("x", "../../etc/hostname")}, True, 400, None),
    ("link out of the folder", {**GOOD, "messages": user("x", "escape.png")}, True, 400, None),
    ("remote URL", {**GOOD, "messages": user("x", "http://example.com/a.png")}, True, 400, None),
    ("max_tokens 0", {**GOOD, "max_tokens": 0}, True, 422, None),
    ("max_tokens huge", {**GOOD, "max_tokens": 10**9}, True, 400, "context_length_exceeded"),
    ("prompt over the context", {**GOOD, "messages": user("drive " * 6000)}, True, 400, None),
    ("temperature not a number", {**GOOD, "temperature": "hot"}, True, 422, None),
    ("n = 2", {**GOOD, "n": 2}, True, 422, None),
    (
        "image from the assistant",
        {
            **GOOD,
            "messages": [
                {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": data_url(IMAGE)}}]},
                *user("x"),
            ],
        },
        True,
        400,
        None,
    ),
    (
        "last message not the user's",
        {**GOOD, "messages": [*user("x"), {"role": "assistant", "content": "y"}]},
        True,
        400,
        None,
    ),
    ("no messages", {**GOOD, "messages": []}, True, 422, None),
    (
        "schema the grammar cannot enforce",
        {
            **GOOD,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "p",
                    "schema": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0}}},
                },
            },
        },
        True,
        400,
        None,
    ),
]


@pytest.mark.parametrize("name,body,auth,status,kind", BAD, ids=[b[0] for b in BAD])
def test_bad_request_gets_its_status_and_an_openai_error(server, name, body, auth, status, kind):
    code, data, headers = server.request("POST", "/v1/chat/completions", body, auth=auth)
    assert code == status, (name, code, data[:500])
    err = json.loads(data)["error"]
    assert isinstance(err["message"], str) and err["message"] and (kind is None or err["type"] == kind), err
    if status == 401:
        assert headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"
    assert server.request("POST", "/v1/chat/completions", GOOD)[0] == 200  # and the server answers the next one


def test_routes_health_models_metrics(server):
    assert server.request("GET", "/health", auth=False)[0] == 200
    assert server.request("GET", "/v1/models", auth=False)[0] == 401
    code, data, _ = server.request("GET", "/v1/models")
    assert code == 200 and json.loads(data)["data"][0]["id"] == "mimo"
    code, data, _ = server.request("GET", "/nowhere")
    assert code == 404 and json.loads(data)["error"]["type"] == "not_found_error"
    text = server.request("GET", "/metrics")[1].decode()
    for name in (
        "edgekit_requests_total",
        "edgekit_queue_depth",
        "edgekit_stage_seconds_bucket",
        "edgekit_decode_tokens_per_second",
    ):
        assert name in text, name


def _open_stream(port: int, max_tokens: int) -> socket.socket:
    body = json.dumps({**GOOD, "max_tokens": max_tokens, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    received = b""
    while b"data:" not in received:  # the headers and the first event may come in separate packets
        piece = s.recv(4096)
        assert piece, received
        received += piece
    return s


def test_a_client_that_leaves_mid_stream_frees_its_slot(server):
    s = _open_stream(server.port, 3000)
    s.close()
    t0 = time.monotonic()
    assert server.request("POST", "/v1/chat/completions", GOOD)[0] == 200
    assert time.monotonic() - t0 < 30


def test_a_full_queue_answers_429_with_retry_after(tiny_bundle, tmp_path):
    srv = Server(tiny_bundle, tmp_path, "--max-queue", "1")
    try:
        results = []

        def ask():
            results.append(srv.request("POST", "/v1/chat/completions", {**GOOD, "max_tokens": 3000}))

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        codes = sorted(r[0] for r in results)
        assert len(codes) == 6 and set(codes) <= {200, 429} and 429 in codes and 200 in codes, codes
        assert all(r[2].get("retry-after", r[2].get("Retry-After")) for r in results if r[0] == 429)
        assert srv.request("POST", "/v1/chat/completions", GOOD)[0] == 200
    finally:
        assert srv.stop() == 0


def test_a_request_past_the_timeout_gets_503(tiny_bundle, tmp_path):
    srv = Server(tiny_bundle, tmp_path, "--timeout", "0.2")
    try:
        code, data, _ = srv.request("POST", "/v1/chat/completions", {**GOOD, "max_tokens": 3000})
        assert code == 503 and json.loads(data)["error"]["type"] == "timeout", data[:300]
        code, data, _ = srv.request("POST", "/v1/chat/completions", {**GOOD, "max_tokens": 3000, "stream": True})
        assert code == 200 and b'"type": "timeout"' in data and data.rstrip().endswith(b"data: [DONE]")
    finally:
        assert srv.stop() == 0


def test_sigterm_finishes_the_request_in_flight_and_exits_0(tiny_bundle, tmp_path):
    srv = Server(tiny_bundle, tmp_path, "--grace", "60")
    s = _open_stream(srv.port, 2000)
    srv.proc.send_signal(signal.SIGTERM)
    received = b""
    while True:
        piece = s.recv(65536)
        if not piece:
            break
        received += piece
        if b"data: [DONE]" in received:
            break
    s.close()
    assert b'"finish_reason": "length"' in received and b"data: [DONE]" in received
    assert srv.proc.wait(timeout=60) == 0
    with pytest.raises(OSError):  # stopped: nothing listens any more
        srv.request("GET", "/health", auth=False, timeout=5)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 is reachable from the network: give --api-key-file"),
        (["--api-key-file", "{short}"], "shorter than 16 characters"),
        (["--vision", "clip"], "--vision 'clip': choose one of onnx, mmproj"),
        (["--vision", "mmproj", "--parallel", "2"], "--parallel 2 needs --vision onnx"),
    ],
)
def test_unsafe_or_unsupported_settings_are_one_line(tiny_bundle, tmp_path, args, needle):
    short = tmp_path / "short"
    short.write_text("abc\n")
    proc = subprocess.run(
        [EDGEKIT, "serve", str(tiny_bundle), "--port", "1", *[a.format(short=short) for a in args]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and needle in " ".join(proc.stderr.split()), proc.stderr[-1000:]
    assert "Traceback" not in proc.stderr


def test_think_splitter_and_stop_scanner_in_any_chunking(test_seed):
    import random

    from edgekit.serve.sampling import next_token
    from edgekit.serve.text_stream import StopScanner, ThinkSplitter

    rng = random.Random(test_seed)
    cases = {
        "<think>\nplan\n</think>\n\nTurn left.": ("\nplan\n", "Turn left."),
        "  <think></think>\n\nGo": ("", "Go"),
        "Straight on.": ("", "Straight on."),
        "<think>unfinished": ("unfinished", ""),
        "<thi": ("", "<thi"),
        "": ("", ""),
        "a <think>b</think>": ("", "a <think>b</think>"),
        " \n ": ("", " \n "),
        "<think>x</think>\n\n": ("x", ""),
    }
    for text, want in cases.items():
        for _ in range(30):
            sp, got, i = ThinkSplitter(), ["", ""], 0
            while i < len(text):
                j = i + rng.randint(1, 4)
                r, c = sp.feed(text[i:j])
                got = [got[0] + r, got[1] + c]
                i = j
            r, c = sp.finish()
            assert (got[0] + r, got[1] + c) == want, (text, test_seed)
    for _ in range(30):
        st, out, text = StopScanner(["STOP", "\n\n"]), "", "go ST on STOP not this"
        i = 0
        while i < len(text):
            j = i + rng.randint(1, 3)
            out += st.feed(text[i:j])
            i = j
        assert out + st.finish() == "go ST on " and st.stopped
    import numpy as np

    logits = np.array([0.0, 5.0, 5.0, -1.0])
    assert next_token(logits, 0.0, 1.0, np.random.default_rng(0)) == 1  # greedy: lowest id on ties
    assert next_token(logits, 0.0, 1.0, np.random.default_rng(0), np.array([1, 0, 0, 1], bool)) == 0
    draws = {next_token(logits, 1.0, 0.4, np.random.default_rng(s)) for s in range(50)}
    assert draws == {1}  # top_p 0.4: the most likely token alone reaches it (ids 1 and 2 tie; the stable sort keeps 1)
    assert {next_token(logits, 1.0, 0.6, np.random.default_rng(s)) for s in range(50)} == {1, 2}
    assert next_token(logits, 1.0, 1.0, np.random.default_rng(7)) == next_token(
        logits, 1.0, 1.0, np.random.default_rng(7)
    )
