"""The package's shape: no import cycles, one format parser, small modules, tests mirroring the package, a
README "Layout" section that names what is there, and the lint rules of pyproject.toml held everywhere."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "edgekit"
MAX_LINES = 350
# Reading a weight format from text anywhere but edgekit/quant/formats.py: prefix tests, splitting a name at its
# colon, rebuilding a name from pieces, or a precision -> type table.
FORMAT_PARSING = re.compile(
    r"""startswith\(\s*["'](gguf|nvidia|int8):|\.split\(\s*["']:["']\s*\)\[1\]|"""
    r"""f["'](gguf|nvidia):\{|removeprefix\(\s*["'](gguf|nvidia)|GGUF_TYPE\s*="""
)


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "build" not in p.relative_to(PACKAGE).parts[:2])


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycles_even_through_function_local_imports():
    ig = _import_graph()
    graph = ig.graph(PACKAGE)
    # a function-local import (open_bundle imports the mmproj pipeline only when asked for it) is an edge too
    assert "edgekit.runtime.mtmd_pipeline" in graph["edgekit.runtime.bundle_pipeline"]
    assert ig.cycles(graph) == []
    # the checker finds a cycle when there is one
    assert ig.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_cycles_between_packages():
    """Packages form layers (data, model, quant, export, targets, bundle, runtime, bench, then the CLI): none reaches
    back into one that reaches it. Metrics sit below every package that reports them."""
    ig = _import_graph()
    graph = ig.graph(PACKAGE)
    packages = ig.collapse(graph)
    assert ig.cycles(packages) == []
    for low in ("edgekit.quant", "edgekit.export", "edgekit.model", "edgekit.data"):
        assert not packages[low] & {"edgekit.bench", "edgekit.bundle", "edgekit.runtime", "edgekit.cli"}, low
    assert "edgekit.metrics" in packages["edgekit.quant"] and packages["edgekit.metrics"] == set()
    # a package's __main__ is a program above its package, as the console script is
    assert "edgekit.qat.__main__" in packages and "edgekit.qat.__main__" not in packages["edgekit.qat"]
    # the collapsed checker still finds a cycle through two packages' modules
    assert ig.cycles(
        ig.collapse({"edgekit.a.x": {"edgekit.b.y"}, "edgekit.b.y": {"edgekit.a.z"}, "edgekit.a.z": set()})
    ) == [["edgekit.a", "edgekit.b"]]


def test_format_strings_are_parsed_in_one_place():
    offenders = []
    for f in _sources():
        if f == PACKAGE / "quant" / "formats.py":
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if FORMAT_PARSING.search(line):
                offenders.append(f"{f.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []
    assert FORMAT_PARSING.search('if grid.startswith("nvidia:w4a16"):')  # the pattern catches the old spellings
    assert FORMAT_PARSING.search('grid.split(":")[1].upper()')


def test_modules_are_small_or_say_why():
    long = []
    for f in _sources():
        text = f.read_text(encoding="utf-8")
        doc = text.split('"""')[1] if text.startswith('"""') else ""
        if len(text.splitlines()) > MAX_LINES and "Long module:" not in doc:
            long.append(f"{f.relative_to(REPO)} ({len(text.splitlines())} lines)")
    assert long == []


def test_tests_mirror_the_package():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    test_dirs = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and list(p.glob("test_*.py"))}
    assert test_dirs <= packages, f"test folders without a package: {sorted(test_dirs - packages)}"
    assert {"quant", "export", "bundle", "model", "runtime", "targets", "cli", "data", "kernels"} <= test_dirs


def test_readme_layout_names_the_tree():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"edgekit/[\w/]+(?:\.py)?", layout))
    missing = sorted(n for n in named if not (REPO / n).exists())
    assert missing == [], f"README Layout names paths that do not exist: {missing}"
    packages = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    listed = set(re.findall(r"^  (\w+)/ ", layout, flags=re.M))
    assert [p for p in packages if p not in listed] == [], "README Layout misses a package"
    assert [p for p in listed if p not in packages] == [], "README Layout names a package that is not there"
    modules = [f.relative_to(PACKAGE).as_posix() for f in _sources() if f.name != "__init__.py"]
    unnamed = [m for m in modules if Path(m).name not in layout]
    assert unnamed == [], f"README Layout misses modules: {unnamed}"


def test_ruff_lint_is_clean():
    """ruff with pyproject.toml's [tool.ruff.lint] rules over the package, tests, scripts and benchmarks."""
    from conftest import require

    require("ruff")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--output-format",
            "concise",
            "edgekit",
            "tests",
            "scripts",
            "benchmarks",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_ruff_format_is_applied():
    """`ruff format --check` (pyproject.toml's [tool.ruff]) over the package, tests, scripts and benchmarks: the code is
    as the formatter writes it."""
    from conftest import require

    require("ruff")
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "edgekit", "tests", "scripts", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, "run `ruff format edgekit tests scripts benchmarks`:\n" + proc.stdout[-3000:]
