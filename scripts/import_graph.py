#!/usr/bin/env python3
"""Which edgekit module imports which, read from the source (every import, function-local ones included).

    python scripts/import_graph.py            # one line per module: module -> the edgekit modules it imports
    python scripts/import_graph.py --cycles   # only the import cycles (exit 1 when there is one)
    python scripts/import_graph.py --packages # the same, one line per package
    python scripts/import_graph.py --dot      # Graphviz
    python scripts/import_graph.py --root ../other-checkout --cycles

An import of a package's submodule does not count as an edge to the package's __init__ (Python runs it, but
an __init__ that imports nothing back cannot close a cycle); `from edgekit.x import y` counts as an edge to
edgekit.x.y when y is a module, else to edgekit.x.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgekit"


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for f in sorted(package.rglob("*.py")):
        rel = f.relative_to(package.parent).with_suffix("")
        if rel.parts[1:3] == ("kernels", "build") or any(p.startswith(".") for p in rel.parts):
            continue  # the kernels' CMake build tree, hidden directories
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = f
    return out


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The edgekit modules `name` (at `path`) imports, anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "edgekit"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "edgekit":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(package)
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def collapse(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module graph -> package graph (edgekit.quant.gptq -> edgekit.quant); top-level modules stay themselves, and
    so does a package's __main__: a program run with `python -m` (like the console script, edgekit.console), which
    its package never imports, so it sits above every package rather than inside its own."""

    def pkg(m: str) -> str:
        return m if m.endswith(".__main__") else ".".join(m.split(".")[:2])

    out: dict[str, set[str]] = {}
    for m, deps in g.items():
        out.setdefault(pkg(m), set()).update(pkg(d) for d in deps if pkg(d) != pkg(m))
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", action="store_true", help="print only the cycles; exit 1 if any")
    ap.add_argument("--dot", action="store_true", help="Graphviz output")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout to read (default: this one)")
    ap.add_argument("--packages", action="store_true", help="collapse modules to their package (edgekit.quant, ...)")
    args = ap.parse_args()
    g = graph(args.root / "edgekit")
    if args.packages:
        g = collapse(g)
    found = cycles(g)
    if args.dot:
        print("digraph edgekit {")
        for m in sorted(g):
            for d in sorted(g[m]):
                print(f'  "{m}" -> "{d}";')
        print("}")
    elif not args.cycles:
        for m in sorted(g):
            print(f"{m} -> {', '.join(sorted(g[m])) or '(nothing in edgekit)'}")
    if args.packages:  # packages may import each other's modules both ways; only module cycles are errors
        for comp in found:
            print("packages reaching each other (through acyclic modules): " + ", ".join(comp))
        return 0
    for comp in found:
        print("cycle: " + " <-> ".join(comp), file=sys.stderr if not args.cycles else sys.stdout)
    if args.cycles and not found:
        print("no import cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
