"""Shared fixtures: generated checkpoints (made once per session) and sample folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLES = REPO.parent / "shared" / "data" / "samples"


def _make(tmp_path_factory, preset: str, seed: int = 0) -> Path:
    from edgekit.model.fixtures import make_tiny

    return make_tiny(tmp_path_factory.mktemp(f"ckpt_{preset}") / preset, preset, seed)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return _make(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory) -> Path:
    return _make(tmp_path_factory, "small")


@pytest.fixture(scope="session")
def shared_samples() -> Path:
    """The real embodied/driving samples beside the repo (CI has them); skip where absent."""
    if not (SHARED_SAMPLES / "driving.jsonl").is_file():
        pytest.skip("../shared/data/samples is not present on this machine")
    return SHARED_SAMPLES


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    # Two cores are shared by everything on these machines; keep torch from oversubscribing.
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    yield


def pytest_configure(config):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def samples_dir(shared_samples) -> Path:
    return shared_samples
