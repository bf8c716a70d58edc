"""Prometheus metrics of one server (its own registry: nothing global): requests by status, queue depth, seconds per
stage (vision, prefill, decode), generated tokens and decode tokens/s, image-embedding cache hits."""

from __future__ import annotations


class Metrics:
    def __init__(self, depth, cache):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgekit_requests", "HTTP requests answered, by status", ["status"], registry=self.registry
        )
        Gauge("edgekit_queue_depth", "Requests waiting or running", registry=self.registry).set_function(depth)
        self.stage = Histogram(
            "edgekit_stage_seconds",
            "Seconds per request stage",
            ["stage"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.tokens = Counter("edgekit_generated_tokens", "Tokens generated", registry=self.registry)
        self.decode_rate = Gauge(
            "edgekit_decode_tokens_per_second", "Decode rate of the last request", registry=self.registry
        )
        Gauge(
            "edgekit_image_cache_hits", "Images answered from the embedding cache", registry=self.registry
        ).set_function(lambda: cache.hits)
        Gauge("edgekit_image_cache_misses", "Images run through the vision graph", registry=self.registry).set_function(
            lambda: cache.misses
        )

    def observe(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage).observe(seconds)

    def finished(self, completion_tokens: int, decode_seconds: float) -> None:
        self.tokens.inc(completion_tokens)
        if decode_seconds > 0 and completion_tokens > 1:
            self.decode_rate.set((completion_tokens - 1) / decode_seconds)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
