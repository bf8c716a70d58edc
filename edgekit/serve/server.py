"""Start `edgekit serve`: checks before anything loads (a network address needs an API key), the bundle verified and
loaded once, uvicorn on the app; SIGTERM/SIGINT stop accepting (503 on open connections), let the requests in flight
finish for up to the grace period, and exit 0."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from edgekit.errors import EdgekitError

LOOPBACK_NAMES = ("localhost",)
MIN_KEY_CHARS = 16


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_api_keys(path: Path) -> tuple[str, ...]:
    """One key per line (blank lines and lines starting with # skipped), each at least MIN_KEY_CHARS characters."""
    from edgekit.safe_files import read_text

    keys = tuple(
        line.strip()
        for line in read_text(path, max_bytes=1 << 20).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not keys:
        raise EdgekitError(f"--api-key-file {path}: no key in it (one per line)")
    short = [i for i, k in enumerate(keys) if len(k) < MIN_KEY_CHARS]
    if short:
        raise EdgekitError(f"--api-key-file {path}: key {short[0] + 1} is shorter than {MIN_KEY_CHARS} characters")
    return keys


def run_server(
    bundle: Path,
    *,
    host: str,
    port: int,
    api_key_file: Path | None,
    max_queue: int,
    threads: int | None,
    vision: str,
    parallel: int,
    settings_kw: dict,
    grace_s: float,
) -> None:
    import uvicorn

    from edgekit.runtime.bundle_pipeline import open_bundle
    from edgekit.serve.app import ServeSettings, create_app
    from edgekit.serve.engine import Engine
    from edgekit.serve.metrics import Metrics

    keys = read_api_keys(api_key_file) if api_key_file else ()
    if not is_loopback(host) and not keys:
        raise EdgekitError(f"--host {host} is reachable from the network: give --api-key-file (or serve on 127.0.0.1)")
    if max_queue < 1:
        raise EdgekitError(f"--max-queue {max_queue}: must be at least 1")
    pipeline = open_bundle(bundle, n_threads=threads, vision=vision, n_seq=parallel)
    engine = Engine(pipeline, max_queue=max_queue, cache_bytes=settings_kw.pop("cache_bytes"))
    metrics = Metrics(lambda: engine.depth, engine.cache)
    engine.observe = metrics.observe
    settings = ServeSettings(
        model_id=settings_kw.pop("model_id") or Path(bundle).resolve().name, api_keys=keys, **settings_kw
    )
    app = create_app(engine, settings, metrics)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("edgekit.serve").info(
        "%s loaded: %s, %d slot(s) of %d tokens (prompt reuse %s)",
        bundle,
        pipeline.backend,
        parallel,
        pipeline.decoder.n_ctx,
        "none: libmtmd" if not engine.reuse else "exact" if parallel == 1 else "at any token",
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # first signal: drain (new requests get 503), then uvicorn's shutdown
            app.state.draining = True
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=grace_s,
        server_header=False,
    )
    from edgekit.interrupts import Terminated

    try:
        Server(config).run()
    except Terminated:  # uvicorn re-raises the SIGTERM it drained for: a clean stop, exit 0
        pass
    finally:
        engine.close()
        pipeline.close()
