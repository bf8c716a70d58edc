"""Jetson's `tegrastats`: parse its lines, sample it during a run, and turn rail power into energy per token.

A line is a sequence of `NAME value` fields whose set and spelling vary by board and L4T release:
  `RAM 3120/62841MB (lfb 12x4MB)`  `SWAP 0/31420MB (cached 0MB)`  `CPU [12%@1728,off,...]`
  `EMC_FREQ 7%@3199` (older releases; `EMC_FREQ 0%` without a clock)
  `GR3D_FREQ 61%@[1300,1300]` (per-GPC clocks, Orin) or `GR3D_FREQ 61%@1300` or `GR3D_FREQ 0%`
  temperatures `tj@48.5C`, or `tj@48.5C/48.6C` on newer releases
  power rails `VDD_GPU_SOC 5210mW/4980mW` (instantaneous / running average), with a third value on L4T r39
  (`VIN_SYS_5V0 3918mW/3952mW/4019mW`, instantaneous / average / maximum), or unit-less `POM_5V_IN 2368/2368`
  on Nano and Xavier releases.
Unknown fields are ignored, so a new board's line still yields what it shares with the others.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

# The rail that measures the whole module's input, by board family, most specific first.
INPUT_RAILS = ("VDD_IN", "VIN_SYS_5V0", "POM_5V_IN", "VIN")

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_FREQ = re.compile(r"\b(GR3D_FREQ|EMC_FREQ) (\d+)%(?:@\[?([\d,]+)\]?)?")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}


@dataclass
class TegraSample:
    t: float  # seconds (time.monotonic) when the line was read
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    gr3d_pct: int | None = None
    gr3d_mhz: int | None = None  # the first GPC's clock when several are listed
    emc_pct: int | None = None
    emc_mhz: int | None = None
    rails_mw: dict[str, tuple[int, ...]] = field(default_factory=dict)  # (instantaneous, average[, maximum])
    temps_c: dict[str, float] = field(default_factory=dict)

    def input_power_mw(self) -> float | None:
        """The module's input power now: the input rail, else the sum of every rail's instantaneous value."""
        for name in INPUT_RAILS:
            if name in self.rails_mw:
                return float(self.rails_mw[name][0])
        return float(sum(v[0] for v in self.rails_mw.values())) if self.rails_mw else None


def parse_line(line: str, t: float = 0.0) -> TegraSample:
    s = TegraSample(t=t)
    m = _RAM.search(line)
    if m:
        s.ram_used_mb, s.ram_total_mb = int(m.group(1)), int(m.group(2))
    for name, pct, clocks in _FREQ.findall(line):
        mhz = int(clocks.split(",")[0]) if clocks else None
        if name == "GR3D_FREQ":
            s.gr3d_pct, s.gr3d_mhz = int(pct), mhz
        else:
            s.emc_pct, s.emc_mhz = int(pct), mhz
    for name, now, unit, avg, peak in _RAIL.findall(line):
        if name in _NOT_RAILS or (not unit and not name.startswith(("POM_", "VDD_", "VIN"))):
            continue  # `SWAP 0/31420MB` and other X/Y fields that are not power
        s.rails_mw[name] = (int(now), int(avg)) + ((int(peak),) if peak else ())
    for name, value in _TEMP.findall(line):  # `cpu@43.3C`; clocks such as `12%@1728` have no letter before @
        s.temps_c[name] = float(value)
    return s


def summarize(samples: list[TegraSample], *, seconds: float, tokens: int) -> dict:
    """Means over the run, and energy per generated token from the input rail (power x time)."""

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    power = mean(s.input_power_mw() for s in samples)
    rails = sorted({n for s in samples for n in s.rails_mw})
    out = {
        "samples": len(samples),
        "ram_used_mb_max": max((s.ram_used_mb for s in samples if s.ram_used_mb is not None), default=None),
        "ram_total_mb": next((s.ram_total_mb for s in samples if s.ram_total_mb), None),
        "gr3d_pct_mean": mean(s.gr3d_pct for s in samples),
        "gr3d_mhz_mean": mean(s.gr3d_mhz for s in samples),
        "emc_pct_mean": mean(s.emc_pct for s in samples),
        "emc_mhz_mean": mean(s.emc_mhz for s in samples),
        "rails_mw_mean": {n: mean(s.rails_mw.get(n, (None,))[0] for s in samples) for n in rails},
        "input_power_mw_mean": power,
        "energy_j": power * seconds / 1e3 if power is not None else None,
    }
    out["energy_mj_per_token"] = out["energy_j"] * 1e3 / tokens if out["energy_j"] is not None and tokens else None
    return out


class TegraStats:
    """`with TegraStats(interval_ms=100) as ts: ...` samples tegrastats in the background; `ts.available` says
    whether this machine has it (not a Jetson: no samples, and the report says so)."""

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats"):
        self.command = shutil.which(command)
        self.interval_ms = interval_ms
        self.samples: list[TegraSample] = []
        self._proc = None
        self._reader = None

    @property
    def available(self) -> bool:
        return self.command is not None

    def __enter__(self) -> "TegraStats":
        if self.command:
            self._proc = subprocess.Popen(
                [self.command, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            self.samples.append(parse_line(line, time.monotonic()))

    def between(self, t0: float, t1: float) -> list[TegraSample]:
        return [s for s in self.samples if t0 <= s.t <= t1]

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._reader.join(timeout=5)
