"""tegrastats lines of the formats Jetson releases print (recorded shapes, numbers of our own), and energy per token."""

from __future__ import annotations

import pytest

from edgekit.bench.tegrastats import TegraStats, parse_line, summarize

# AGX Orin, L4T r35/r36: two values per rail (instantaneous / average), per-GPC GR3D clocks, EMC with its clock.
ORIN_TWO = (
    "11-20-2026 14:02:11 RAM 6120/62841MB (lfb 612x4MB) SWAP 0/31420MB (cached 0MB) "
    "CPU [41%@2201,38%@2201,40%@2201,35%@2201,12%@2201,9%@2201,off,off,off,off,off,off] "
    "EMC_FREQ 23%@3199 GR3D_FREQ 87%@[1300,1300] VIC_FREQ 729 APE 174 CV0@48.2C CPU@51.5C "
    "SOC2@47.9C SOC0@48.8C CV1@47.3C GPU@50.1C tj@51.5C SOC1@47.5C CV2@47.6C "
    "VDD_GPU_SOC 9821mW/9410mW VDD_CPU_CV 2410mW/2380mW VIN_SYS_5V0 4210mW/4190mW VDDQ_VDD2_1V8AO 1302mW/1298mW"
)
# L4T r39 (Thor generation): three values per rail (instantaneous / average / maximum), two per temperature,
# GR3D without a clock, no EMC field.
THOR_THREE = (
    "10-02-2026 09:41:07 RAM 18213/125772MB CPU [3%@1998,5%@1998,off] GR3D_FREQ 64% "
    "cpu@44.118C/44.250C soc2@40.562C/40.625C tj@45.031C/45.200C "
    "VDD_GPU 21840mW/20110mW/23890mW VDD_CPU_SOC_MSS 6120mW/6034mW/6610mW VIN 48210mW/46800mW/51020mW"
)
# Nano / Xavier, L4T r32: unit-less POM_ rails, a single CPU clock list.
NANO_OLD = (
    "RAM 2448/3964MB (lfb 1x4MB) SWAP 0/1982MB (cached 0MB) CPU [10%@1428,8%@1428,12%@1428,6%@1428] "
    "EMC_FREQ 4%@1600 GR3D_FREQ 0%@921 APE 25 PLL@38C CPU@41.5C PMIC@100C GPU@39C AO@46.5C thermal@40.25C "
    "POM_5V_IN 3468/3312 POM_5V_GPU 124/120 POM_5V_CPU 875/812"
)


def test_orin_two_value_line():
    s = parse_line(ORIN_TWO, t=1.0)
    assert (s.ram_used_mb, s.ram_total_mb) == (6120, 62841)
    assert (s.gr3d_pct, s.gr3d_mhz, s.emc_pct, s.emc_mhz) == (87, 1300, 23, 3199)
    assert s.rails_mw == {
        "VDD_GPU_SOC": (9821, 9410),
        "VDD_CPU_CV": (2410, 2380),
        "VIN_SYS_5V0": (4210, 4190),
        "VDDQ_VDD2_1V8AO": (1302, 1298),
    }
    assert s.temps_c["tj"] == 51.5 and s.temps_c["GPU"] == 50.1
    assert s.input_power_mw() == 4210.0  # VIN_SYS_5V0 is the module's input rail here


def test_three_value_line():
    s = parse_line(THOR_THREE)
    assert (s.ram_used_mb, s.gr3d_pct, s.gr3d_mhz, s.emc_pct) == (18213, 64, None, None)
    assert s.rails_mw["VDD_GPU"] == (21840, 20110, 23890) and s.rails_mw["VIN"] == (48210, 46800, 51020)
    assert s.temps_c == {"cpu": 44.118, "soc2": 40.562, "tj": 45.031}
    assert s.input_power_mw() == 48210.0


def test_old_unitless_rails_and_no_swap_as_power():
    s = parse_line(NANO_OLD)
    assert s.rails_mw == {"POM_5V_IN": (3468, 3312), "POM_5V_GPU": (124, 120), "POM_5V_CPU": (875, 812)}
    assert (s.gr3d_pct, s.gr3d_mhz, s.emc_mhz) == (0, 921, 1600)
    assert s.input_power_mw() == 3468.0


def test_unknown_board_sums_its_rails_and_garbage_yields_nothing():
    s = parse_line("RAM 10/20MB VDD_A 100mW/90mW VDD_B 50mW/50mW")
    assert s.input_power_mw() == 150.0
    empty = parse_line("tegrastats: command not found")
    assert empty.rails_mw == {} and empty.ram_used_mb is None and empty.input_power_mw() is None


def test_energy_per_token():
    lines = [
        parse_line(ORIN_TWO.replace("VIN_SYS_5V0 4210mW", f"VIN_SYS_5V0 {p}mW"), t=i)
        for i, p in enumerate((4000, 5000, 6000))
    ]
    got = summarize(lines, seconds=2.0, tokens=100)
    assert got["input_power_mw_mean"] == 5000.0
    assert got["energy_j"] == pytest.approx(10.0) and got["energy_mj_per_token"] == pytest.approx(100.0)
    assert got["gr3d_pct_mean"] == 87 and got["ram_used_mb_max"] == 6120
    assert summarize([], seconds=1.0, tokens=10)["energy_j"] is None


def test_absent_tegrastats_is_reported_not_fatal():
    with TegraStats(command="edgekit-no-such-tegrastats") as ts:
        pass
    assert not ts.available and ts.samples == []
