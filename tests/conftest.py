"""Shared fixtures: generated checkpoints (made once per session), sample folders, the run's seed, and `require`.

Randomness: one seed per run (EDGEKIT_TEST_SEED=N reruns it; otherwise drawn fresh), printed in the header and
beside every failure. Each test gets its own seed derived from it and its node id (`test_seed`), and the global
random, numpy and torch generators are seeded with that before the test runs.

Optional packages: `require("llama_cpp")` skips a test module where the package is missing, and fails it loudly
when EDGEKIT_REQUIRE_ALL=1 (CI sets it), so a broken install never passes as "skipped".
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLES = REPO.parent / "shared" / "data" / "samples"
RUN_SEED = int(os.environ.get("EDGEKIT_TEST_SEED") or random.SystemRandom().randrange(2**31))
REQUIRE_ALL = os.environ.get("EDGEKIT_REQUIRE_ALL") == "1"


def require(module: str):
    """Import an optional package for a test module: skip where it is missing, fail when CI requires everything."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if REQUIRE_ALL:
            pytest.fail(f"{module} is required here (EDGEKIT_REQUIRE_ALL=1) but does not import: {e}", pytrace=False)
        pytest.skip(f"{module} is not installed", allow_module_level=True)


def seed_for(name: str) -> int:
    """A seed for one named draw, derived from the run's seed (stable for a given EDGEKIT_TEST_SEED)."""
    return int.from_bytes(hashlib.sha256(f"{RUN_SEED}:{name}".encode()).digest()[:4], "little")


def pytest_report_header(config):
    return f"edgekit test seed: {RUN_SEED} (EDGEKIT_TEST_SEED={RUN_SEED} reruns every random draw)"


@pytest.fixture
def test_seed(request) -> int:
    return seed_for(request.node.nodeid)


@pytest.fixture(autouse=True)
def _seed_global_generators(request):
    seed = seed_for(request.node.nodeid)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    if "torch" in __import__("sys").modules:  # only when a test already uses torch: importing it costs seconds
        __import__("torch").manual_seed(seed)
    yield


def pytest_collection_modifyitems(config, items):
    """Tests that run the C++ host's programs (not its library in this process) are marked `cpp_host`: CI runs them
    once more against the AddressSanitizer build (.ci/run)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "host" in names and not names & {"library", "host_library"}:
            item.add_marker(pytest.mark.cpp_host)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.append(("seed", f"EDGEKIT_TEST_SEED={RUN_SEED} (this test's seed {seed_for(item.nodeid)})"))


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
        if REQUIRE_ALL:
            pytest.fail(f"{SHARED_SAMPLES} is required here (EDGEKIT_REQUIRE_ALL=1) but missing", pytrace=False)
        pytest.skip("../shared/data/samples is not present on this machine")
    return SHARED_SAMPLES


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    # Two cores are shared by everything on these machines; keep torch from oversubscribing.
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    yield


_OWN_CACHE_DIR: str | None = None  # the temp cache this run made (removed at the end), not a user's


def pytest_configure(config):
    import tempfile

    global _OWN_CACHE_DIR
    # Builds keep calibrations between runs (~/.cache/edgekit by default): tests keep theirs in a fresh temp dir.
    if "EDGEKIT_CACHE_DIR" not in os.environ:
        _OWN_CACHE_DIR = os.environ["EDGEKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgekit-test-cache-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pytest_unconfigure(config):
    import shutil

    if _OWN_CACHE_DIR:
        shutil.rmtree(_OWN_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def samples_dir(shared_samples) -> Path:
    return shared_samples


def _bundle(tmp_path_factory, ckpt: Path, name: str, **config) -> Path:
    from edgekit.bundle.build import BuildConfig, build_bundle

    return build_bundle(ckpt, tmp_path_factory.mktemp(f"bundle_{name}") / name, BuildConfig(target="cpu", **config))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_ckpt) -> Path:
    """CPU INT4 (round-to-nearest Q4_K) bundle of the tiny checkpoint, built once per run."""
    return _bundle(tmp_path_factory, tiny_ckpt, "tiny-int4", precision="int4", method="rtn")


@pytest.fixture(scope="session")
def small_bundles(tmp_path_factory, small_ckpt) -> dict[str, Path]:
    """CPU bundles of the small checkpoint, built once per run: INT4 (RTN Q4_K) and FP16."""
    return {
        "int4": _bundle(tmp_path_factory, small_ckpt, "small-int4", precision="int4", method="rtn"),
        "fp16": _bundle(tmp_path_factory, small_ckpt, "small-fp16", precision="fp16"),
    }


# ---- the bad-input corpus (tests/cli) and the C++ host ---------------------------------------------------------


@pytest.fixture()
def ckpt(tiny_ckpt, tmp_path) -> Path:
    """A private copy of the tiny checkpoint to break."""
    import shutil

    return Path(shutil.copytree(tiny_ckpt, tmp_path / "ckpt"))


@pytest.fixture(scope="session")
def bundle(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint's CPU INT4 bundle built with the defaults, through the CLI (never modified: copy it)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("bundle") / "b"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "edgekit"),
            "build",
            str(tiny_ckpt),
            "--target",
            "cpu",
            "--precision",
            "int4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture()
def copy(bundle, tmp_path) -> Path:
    """A private copy of `bundle` to tamper with."""
    import shutil

    return Path(shutil.copytree(bundle, tmp_path / "copy", symlinks=True))


@pytest.fixture()
def tmpfs(tmp_path):
    """A small tmpfs (disk full, read-only, mount point); needs root, as CI is."""
    import subprocess

    mounted = []

    def mount(name: str, size: str, *, readonly: bool = False) -> Path:
        d = tmp_path / name
        d.mkdir()
        opts = f"size={size}" + (",ro" if readonly else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (not root)")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.fixture(scope="session")
def host(tmp_path_factory) -> Path:
    """The C++ host's build directory: $EDGEKIT_HOST_BUILD when .ci/run built it already, else built here once."""
    import shutil
    import subprocess

    given = os.environ.get("EDGEKIT_HOST_BUILD")
    if given and (Path(given) / "edgekit-host").is_file():
        return Path(given)
    if shutil.which("cmake") is None:
        pytest.fail("cmake is needed to build hosts/cpp (apt-get install cmake)", pytrace=False)
    build = tmp_path_factory.mktemp("host") / "build"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "build_cpp_host.sh"), str(build)], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return build
