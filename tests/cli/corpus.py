"""What the bad-input corpus files share: the CLI as a user runs it (the console script, in a subprocess), the
one-line-error assertion and the seeded draws (the fixtures, a private checkpoint copy, a built bundle and copies of
it, a small tmpfs, are in tests/conftest.py). Random bytes to flip and fields to edit are drawn afresh each run;
EDGEKIT_BAD_INPUT_SEED=N reruns a draw."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from conftest import seed_for

MANIFEST = "edgekit.json"

EDGEKIT = str(Path(sys.executable).parent / "edgekit")
SEED = int(os.environ.get("EDGEKIT_BAD_INPUT_SEED") or seed_for("bad-input corpus"))
ASSET = Path(__file__).resolve().parents[2] / "edgekit" / "data" / "assets" / "driving_0_000.png"
# CI's second pass over the C++ host's cases, on its AddressSanitizer build (.ci/run, `-m cpp_host`), sets this: the
# Python halves of those cases (verify, run --bundle) ran unchanged in the first pass, so only the host runs again.
HOST_CASES_ONLY = os.environ.get("EDGEKIT_HOST_CASES_ONLY") == "1"


def rng_for(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


def cli(*args, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEKIT, *map(os.fsencode, args)], capture_output=True, cwd=cwd, timeout=timeout, env=env)


def one_line_error(proc, code: int, *needles: str) -> str:
    err = os.fsdecode(proc.stderr)
    assert proc.returncode == code, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in os.fsdecode(proc.stdout), err[-3000:]
    flat = " ".join(err.split())
    for needle in needles:
        assert needle in flat, (needle, flat[-1500:])
    return flat


def edit_manifest(bundle: Path, edit, *, reseal: bool) -> None:
    from edgekit.bundle.manifest import seal_manifest

    m = json.loads((bundle / MANIFEST).read_text())
    edit(m)
    (bundle / MANIFEST).write_text(json.dumps(seal_manifest(m) if reseal else m))


def refused_everywhere(bundle: Path, *needles: str) -> None:
    """Neither verify nor run accepts the bundle, and both say why."""
    if HOST_CASES_ONLY:
        return
    one_line_error(cli("verify", bundle), 1, *needles)
    one_line_error(cli("run", "--bundle", bundle, "--image", ASSET, "--max-new-tokens", "2"), 2, *needles)
