"""The HTTP side of `edgekit serve` (FastAPI, imported only by the serve command): OpenAI's chat completions (plain and server-sent events), models,
health and Prometheus metrics; bearer keys compared in constant time, body and pixel limits, a bounded queue (429 with
Retry-After), errors as OpenAI's error object, one log line per request (no prompt or image bytes unless asked)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from edgekit.serve.engine import Busy, Engine, Job, Params
from edgekit.serve.protocol import ApiError, conversation, parse_request

log = logging.getLogger("edgekit.serve")


@dataclass
class ServeSettings:
    model_id: str
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = 32 << 20
    max_pixels: int = 4096 * 4096
    timeout_s: float = 300.0
    image_dir: Path | None = None
    log_prompts: bool = False
    default_max_tokens: int = 512


def create_app(engine: Engine, settings: ServeSettings, metrics) -> FastAPI:
    app = FastAPI(title="edgekit serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.draining = False

    def error(e: ApiError, headers: dict | None = None):
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # unknown routes and methods, in OpenAI's shape
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error(ApiError(exc.status_code, kind, f"{request.method} {request.url.path}: {exc.detail}"))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        t0 = time.perf_counter()
        try:
            if request.url.path != "/health":
                _authorize(request, settings.api_keys)
            if app.state.draining:
                raise ApiError(503, "server_shutting_down", "the server is shutting down")
            declared = request.headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > settings.max_body_bytes):
                raise ApiError(413, "invalid_request_error", f"the body is over {settings.max_body_bytes} bytes")
            response = await call_next(request)
        except ApiError as e:
            response = error(e, {"WWW-Authenticate": "Bearer"} if e.status == 401 else None)
        metrics.requests.labels(str(response.status_code)).inc()
        log.info(
            "%s %s %d %.0f ms",
            request.method,
            request.url.path,
            response.status_code,
            1000 * (time.perf_counter() - t0),
        )
        return response

    @app.get("/health")
    async def health():
        if app.state.draining:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        return {"status": "ok", "model": settings.model_id, "queue": engine.depth}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": settings.model_id, "object": "model", "created": 0, "owned_by": "edgekit"}],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await _read_body(request, settings.max_body_bytes)
            req = parse_request(body)
            if req.model != settings.model_id:
                raise ApiError(
                    404,
                    "model_not_found",
                    f"model {req.model!r} is not served here; GET /v1/models lists {settings.model_id!r}",
                    "model",
                )
            conv = await asyncio.to_thread(
                conversation, req, image_dir=settings.image_dir, max_pixels=settings.max_pixels
            )
            params = _params(req, conv, engine.decoder.n_ctx, settings.default_max_tokens)
        except ApiError as e:
            return error(e)
        if settings.log_prompts:
            log.info(
                "prompt %s",
                json.dumps([[r, [p if isinstance(p, str) else "<image>" for p in parts]] for r, parts in conv.turns]),
            )
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        job = Job(
            conv.turns,
            conv.images,
            params,
            lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev),
            time.monotonic() + settings.timeout_s,
        )
        try:
            engine.submit(job)
        except Busy:
            return error(
                ApiError(429, "rate_limit_exceeded", "the server's queue is full; retry later"), {"Retry-After": "2"}
            )
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            return StreamingResponse(
                _stream(job, events, rid, created, settings.model_id, metrics),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return await _complete(job, events, request, rid, created, settings.model_id, metrics)

    return app


def _authorize(request, keys: tuple[str, ...]) -> None:
    if not keys:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given[:7].lower() == "bearer " else ""
    ok = False
    for key in keys:  # every key compared, in constant time: the answer's timing says nothing about the key
        ok |= hmac.compare_digest(token.encode(), key.encode())
    if not ok:
        raise ApiError(401, "invalid_api_key", "missing or wrong API key (Authorization: Bearer KEY)")


async def _read_body(request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "invalid_request_error", f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _params(req, conv, n_ctx: int, default_max: int) -> Params:
    from edgekit.errors import EdgekitError
    from edgekit.runtime.grammar import gbnf_for

    asked = req.max_completion_tokens or req.max_tokens
    if asked is not None and asked >= n_ctx:
        raise ApiError(
            400,
            "context_length_exceeded",
            f"max_tokens {asked}: the bundle's context holds {n_ctx} tokens, the prompt included",
            "max_tokens",
        )
    try:
        gbnf = gbnf_for(req.response_format) if req.response_format else None
    except EdgekitError as e:
        raise ApiError(400, "invalid_request_error", str(e), "response_format") from None
    return Params(
        max_tokens=asked or min(default_max, n_ctx // 2),
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        stops=conv.stops,
        think=conv.think,
        gbnf=gbnf,
    )


def _chunk(rid: str, created: int, model: str, delta: dict, finish=None, usage=None) -> str:
    body = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


async def _stream(job: Job, events: asyncio.Queue, rid: str, created: int, model: str, metrics):
    try:
        yield _chunk(rid, created, model, {"role": "assistant", "content": ""})
        while True:
            ev = await events.get()
            if ev[0] == "delta":
                delta = {k: v for k, v in (("reasoning_content", ev[1]), ("content", ev[2])) if v}
                yield _chunk(rid, created, model, delta)
            elif ev[0] == "done":
                metrics.finished(ev[2]["completion_tokens"], ev[3]["decode"])
                yield _chunk(rid, created, model, {}, ev[1], ev[2])
                break
            else:
                yield f"data: {json.dumps(ApiError(ev[1], ev[2], ev[3]).body())}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:  # the client went away (the generator is closed) or the answer ended: free the slot either way
        job.cancelled.set()


async def _complete(job: Job, events: asyncio.Queue, request, rid: str, created: int, model: str, metrics):
    reasoning, content = [], []
    try:
        while True:
            try:
                ev = await asyncio.wait_for(events.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return JSONResponse({}, status_code=499)
                continue
            if ev[0] == "delta":
                reasoning.append(ev[1])
                content.append(ev[2])
            elif ev[0] == "done":
                metrics.finished(ev[2]["completion_tokens"], ev[3]["decode"])
                message = {"role": "assistant", "content": "".join(content)}
                if any(reasoning):
                    message["reasoning_content"] = "".join(reasoning)
                return JSONResponse(
                    {
                        "id": rid,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [{"index": 0, "message": message, "finish_reason": ev[1]}],
                        "usage": ev[2],
                        "edgekit_timings": ev[3],
                    }
                )
            else:
                return JSONResponse(ApiError(ev[1], ev[2], ev[3]).body(), status_code=ev[1])
    finally:
        job.cancelled.set()
