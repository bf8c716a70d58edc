"""Thread settings for running a bundle on this machine, chosen by measurement and recorded for the runtime.

llama.cpp's CPU backend runs on OpenMP threads that spin-wait between operations; measured on 2 cores, its decode
swung between 1 and 20 tokens/s when other processes computed on the same cores. The thread count and the wait
policy (OMP_WAIT_POLICY: ACTIVE spins, PASSIVE sleeps) that are fastest depend on the machine and on what else it
runs, so `edgekit profile --tune` measures them and records the winner here, per machine and per bundle (keyed by
the bundle's seal). `open_bundle` applies a recorded setting unless the caller passes threads. The wait policy is
read when libgomp loads, so it takes effect only in a process that has not loaded llama.cpp yet (the benchmark's
and profiler's workers are fresh processes).

File: $EDGEKIT_RUNTIME_SETTINGS, else <cache dir>/runtime-settings.json (edgekit.cache_dir).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.cache_dir import default_cache_dir
from edgekit.cores import available_cores

SCHEMA = "edgekit.runtime-settings/1"
WAIT_POLICIES = ("active", "passive")


@dataclass(frozen=True)
class ThreadSettings:
    threads: int
    omp_wait_policy: str | None = None  # None: libgomp's default (spin a while, then sleep)

    def env(self) -> dict[str, str]:
        return {"OMP_WAIT_POLICY": self.omp_wait_policy.upper()} if self.omp_wait_policy else {}

    def describe(self) -> str:
        return f"{self.threads} thread(s), OMP_WAIT_POLICY={self.omp_wait_policy or 'default'}"


def settings_path() -> Path:
    return Path(os.environ.get("EDGEKIT_RUNTIME_SETTINGS") or default_cache_dir() / "runtime-settings.json")


def check_threads(threads: int | None, flag: str = "--threads") -> None:
    """A thread count from 1 to 4 x the cores here (None: choose automatically); beyond that threads only contend."""
    from edgekit.errors import EdgekitError

    limit = 4 * available_cores()
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit):
        raise EdgekitError(f"{flag} {threads!r}: must be from 1 to {limit} (4 x the {available_cores()} cores here)")


def machine_key() -> str:
    """CPU model and the cores this process may use: settings measured elsewhere do not apply here."""
    model = platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith(("model name", "Model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} / {available_cores()} cores"


def _read(path: Path) -> dict:
    from edgekit.errors import EdgekitError
    from edgekit.json_files import read_json

    try:
        data = read_json(path) if path.exists() else None
    except EdgekitError:  # a damaged settings file is only a lost measurement: measure again
        return {"schema": SCHEMA, "machines": {}}
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else {"schema": SCHEMA, "machines": {}}


def lookup(seal: str) -> ThreadSettings | None:
    entry = _read(settings_path()).get("machines", {}).get(machine_key(), {}).get(seal)
    if not isinstance(entry, dict):
        return None
    try:
        settings = ThreadSettings(int(entry["threads"]), entry.get("omp_wait_policy"))
    except (KeyError, TypeError, ValueError):
        return None
    return settings if settings.threads >= 1 and settings.omp_wait_policy in (None, *WAIT_POLICIES) else None


def record(seal: str, settings: ThreadSettings, evidence: dict) -> Path:
    """Store the measured winner for this machine and bundle (atomic rewrite of the settings file)."""
    from edgekit.atomic import write_json

    path = settings_path()
    data = _read(path)
    data.setdefault("machines", {}).setdefault(machine_key(), {})[seal] = {**asdict(settings), "evidence": evidence}
    write_json(path, data)
    return path


def apply_wait_policy(settings: ThreadSettings) -> bool:
    """Set OMP_WAIT_POLICY for llama.cpp's libgomp if it has not loaded in this process yet; False when too late."""
    if not settings.omp_wait_policy:
        return True
    if "llama_cpp" in sys.modules:
        return os.environ.get("OMP_WAIT_POLICY", "").lower() == settings.omp_wait_policy
    os.environ["OMP_WAIT_POLICY"] = settings.omp_wait_policy.upper()
    return True
