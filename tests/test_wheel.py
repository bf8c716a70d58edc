"""The wheel is the product (issue 12): built from the repo's files, it carries every target recipe and every CUDA
source, and installed into a fresh venv, away from the source tree, `edgekit targets`, `plan` and `doctor` work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = (
    "edgekit/targets/recipes/*.toml",
    "edgekit/kernels/*.cu",
    "edgekit/kernels/*.cuh",
    "edgekit/kernels/*.h",
    "edgekit/kernels/CMakeLists.txt",
    "edgekit/kernels/cmake/*.cmake",
    "edgekit/kernels/emu/*",
)


def _project_files() -> list[str]:
    """What a clean checkout holds: tracked files plus new ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in out.stdout.splitlines() if (REPO / f).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for rel in _project_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("edgekit-*.whl")
    return whl


def test_wheel_lists_every_target_and_cuda_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for pattern in PACKAGE_DATA:
        expected = {str(p.relative_to(REPO)) for p in REPO.glob(pattern)}
        assert expected, pattern
        assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert {
        "edgekit/kernels/vit_window_attention.cu",
        "edgekit/kernels/decode_attention.cu",
        "edgekit/targets/recipes/orin-agx-64.toml",
    } <= names
    assert not any(n.startswith(("recipes/", "kernels/", "tests/")) for n in names)


@pytest.fixture(scope="module")
def wheel_venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with only the wheel installed in it; dependencies are borrowed from this venv's site-packages
    through a .pth line (no network), which does not run this venv's editable-install hook."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "edgekit"), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_installed_wheel_runs_targets_plan_doctor_without_the_source_tree(wheel_venv, tiny_ckpt, tmp_path):
    py = wheel_venv / "bin" / "python"
    where = subprocess.run(
        [
            str(py),
            "-c",
            "import edgekit.targets as t, edgekit.kernels.attention as k; print(t.TARGETS_DIR); print(k.KERNELS_DIR)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    targets_dir, kernels_dir = (Path(p) for p in where.stdout.split())
    assert wheel_venv in targets_dir.parents and wheel_venv in kernels_dir.parents, where.stdout + where.stderr
    assert (kernels_dir / "vit_window_attention.cu").is_file()
    data = subprocess.run(
        [
            str(py),
            "-c",
            "from edgekit.data.heldout import load_heldout; "
            "from edgekit.data.calibration_mix import load_passages; "
            "print(sum(i.image is not None and i.image.is_file() for i in load_heldout()), len(load_passages()))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert data.stdout.split() == ["8", "12"], data.stdout + data.stderr  # the held-out set and generic text ship

    proc = _run(wheel_venv, "targets", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    targets = json.loads(proc.stdout)
    assert {"cpu", "orin-agx-64", "thor-agx"} <= set(targets)

    config = tmp_path / "cfg"
    config.mkdir()
    shutil.copy(tiny_ckpt / "config.json", config / "config.json")  # plan needs config.json alone
    proc = _run(wheel_venv, "plan", str(config), "--target", "orin", "--precision", "int4", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["fits"] is True and plan["decode_tokens_per_s_bound"] > 0

    proc = _run(wheel_venv, "doctor", "--json", "--no-objdump", cwd=tmp_path)
    report = json.loads(proc.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["targets"]["status"] == "green" and str(wheel_venv) in by_name["targets"]["detail"]
    assert proc.returncode == (0 if report["ok"] else 1)
    assert report["ok"], [c for c in report["checks"] if c["status"] == "red"]
