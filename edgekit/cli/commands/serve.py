"""Command: serve a bundle behind an OpenAI-compatible HTTP API (edgekit.serve; needs the `serve` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.app import app


@app.command("serve")
def serve_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (verified, then loaded once).")],
    host: Annotated[
        str, typer.Option(help="Address to bind. Anything but loopback needs --api-key-file.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
    api_key_file: Annotated[
        Optional[Path],
        typer.Option(help="File of API keys, one per line (16+ characters); clients send `Authorization: Bearer KEY`."),
    ] = None,
    max_queue: Annotated[
        int, typer.Option(help="Requests waiting or running at once; more get 429 with Retry-After.")
    ] = 8,
    threads: Annotated[
        Optional[int],
        typer.Option(min=1, help="Threads (default: the setting `edgekit profile --tune` recorded, else every core)."),
    ] = None,
    vision: Annotated[
        str,
        typer.Option(
            help="onnx: the bundle's vision graph in ONNX Runtime (embeddings cached per "
            "image); mmproj: everything in llama.cpp through libmtmd."
        ),
    ] = "onnx",
    parallel: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Requests answered at once, one KV slot each, decoded "
            "together in one batch per token (the KV cache holds parallel x the "
            "bundle's context). 1: every greedy answer is exactly `edgekit run`'s; "
            "more: near-ties may break otherwise (other batch sizes sum in another "
            "order). ONNX vision only.",
        ),
    ] = 1,
    image_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="Allow image_url parts naming local files below this folder (default: data: URLs only; never remote)."
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a request may take, queueing included; then 503.")
    ] = 300.0,
    max_body_mb: Annotated[float, typer.Option(min=0.01, help="Largest request body (MB).")] = 32.0,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Largest image (width x height) accepted, checked before decoding.")
    ] = 4096 * 4096,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens generated when a request sets no max_tokens.")] = 512,
    cache_mb: Annotated[
        float,
        typer.Option(min=0, help="Image-embedding cache (MB): the same image in consecutive requests is encoded once."),
    ] = 256.0,
    model_name: Annotated[
        Optional[str], typer.Option(help="Model id clients send (default: the bundle folder's name).")
    ] = None,
    grace: Annotated[
        float, typer.Option(min=0, help="On SIGTERM, seconds the requests in flight may take to finish.")
    ] = 30.0,
    log_prompts: Annotated[
        bool, typer.Option("--log-prompts", help="Log each request's text (never image bytes).")
    ] = False,
) -> None:
    """Serve a bundle: POST /v1/chat/completions (OpenAI's schema: text and image_url parts, streaming, max_tokens,
    temperature 0 = greedy as `edgekit run`, top_p, seed, stop, response_format json_object / json_schema by llama.cpp
    grammar, reasoning_content split from content, chat_template_kwargs.enable_thinking), GET /v1/models, /health,
    /metrics. Binds 127.0.0.1 unless told. A prompt that begins like one answered before (system prompt, the same
    image, earlier turns) reuses its KV cells (usage.prompt_tokens_details.cached_tokens); up to --parallel requests
    are answered together, the rest queued."""
    from edgekit.errors import EdgekitError

    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise EdgekitError(
            f"edgekit serve needs the serve extra ({e.name} is missing): pip install 'edgekit[serve]'"
        ) from None
    from edgekit.serve.server import run_server

    run_server(
        bundle,
        host=host,
        port=port,
        api_key_file=api_key_file,
        max_queue=max_queue,
        threads=threads,
        vision=vision,
        parallel=parallel,
        grace_s=grace,
        settings_kw={
            "cache_bytes": int(cache_mb * (1 << 20)),
            "model_id": model_name,
            "max_body_bytes": int(max_body_mb * (1 << 20)),
            "max_pixels": max_pixels,
            "timeout_s": timeout,
            "image_dir": image_dir,
            "log_prompts": log_prompts,
            "default_max_tokens": max_tokens,
        },
    )
