"""Imports point down only and never loop: the layer order written in docs/architecture.md, enforced on every
file's imports (top-level, inside functions, under TYPE_CHECKING, relative, and modules named in strings for
importlib registries)."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"

# Known violations, each removed by the helper named, as their branches land (the lead empties this list).
# An entry is an import edge (importer, imported) that the checks ignore; an entry that no longer occurs
# fails the test so that it is deleted. Never add one to make a new violation pass: fix the import.
ALLOWED: dict[tuple[str, str], str] = {}

_MODULE_STRING = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)+)(?::\w+)?$")


# ------------------------------------------------------------------------------------------------ the checker
def parse_layers(text: str) -> dict[str, tuple[int, str]]:
    """``{package: (rank, layer)}`` from the markdown table whose rows read ``| rank | layer | `pkg`, ... |``."""
    layers: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|", line)
        if m:
            for pkg in re.findall(r"`([\w.]+)`", m.group(3)):
                layers[pkg] = (int(m.group(1)), m.group(2))
    if not layers:
        raise ValueError("no layer table found (rows `| rank | layer | `package`, ... |`)")
    return layers


def module_files(src: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``src`` (packages by their ``__init__``)."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _known(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that ``name`` (at ``path``) imports, anywhere in the file."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = _MODULE_STRING.match(node.value)
            if m and m.group(1) in modules:  # "pkg.mod" or "pkg.mod:attr" naming a module: importlib registry
                targets = [m.group(1)]
        for t in targets:
            k = _known(t, modules)
            if k is not None and k != name:
                found.add(k)
    return found


def layer_of(module: str, layers: dict[str, tuple[int, str]]) -> tuple[int, str] | None:
    """The layer of the longest listed package containing ``module``; the top-level package (``gnomon``)
    stands for its own ``__init__`` only, so a new folder must be listed."""
    best = None
    for pkg in layers:
        inside = module == pkg or ("." in pkg and module.startswith(pkg + "."))
        if inside and (best is None or len(pkg) > len(best)):
            best = pkg
    return layers[best] if best is not None else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out, counter = set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def check(src: Path, package: str, layers: dict[str, tuple[int, str]],
          allowed: dict[tuple[str, str], str]) -> list[str]:
    """Every problem: a module in no layer, an import from a higher layer, an import cycle between files, an
    allowlist entry that no longer occurs."""
    modules = module_files(src, package)
    graph = {m: imports_of(m, p, modules) for m, p in modules.items()}
    problems = []
    for m in sorted(modules):
        if layer_of(m, layers) is None:
            problems.append(f"{m}: in no layer of the table (add its package to docs/architecture.md)")
    edges = {(a, b) for a, bs in graph.items() for b in bs}
    for a, b in sorted(edges - set(allowed)):
        la, lb = layer_of(a, layers), layer_of(b, layers)
        if la is not None and lb is not None and lb[0] > la[0]:
            problems.append(f"upward import: {a} ({la[1]}, rank {la[0]}) imports {b} ({lb[1]}, rank {lb[0]})")
    kept = {a: {b for b in bs if (a, b) not in allowed} for a, bs in graph.items()}
    for comp in _cycles(kept):
        loop = [(a, b) for a in comp for b in sorted(kept[a]) if b in comp]
        problems.append("import cycle: " + "; ".join(f"{a} -> {b}" for a, b in loop))
    for a, b in sorted(set(allowed) - edges):
        problems.append(f"allowlist entry ({a!r}, {b!r}) [{allowed[(a, b)]}] no longer occurs: delete it")
    return problems


# ------------------------------------------------------------------------------------------------ gnomon
def test_gnomon_imports_follow_the_layers():
    layers = parse_layers(DOC.read_text(encoding="utf-8"))
    problems = check(ROOT / "src", "gnomon", layers, ALLOWED)
    assert problems == [], "\n".join(problems)


def test_the_documented_order():
    layers = parse_layers(DOC.read_text(encoding="utf-8"))
    rank = {pkg: r for pkg, (r, _) in layers.items()}
    order = ["gnomon.util", "gnomon.thetaspace", "gnomon.objective", "gnomon.curvature", "gnomon.trace",
             "gnomon.signals", "gnomon.io", "gnomon.optim", "gnomon.sampler", "gnomon.experiment", "gnomon.plot",
             "gnomon.recipes", "gnomon", "gnomon.interface"]
    ranks = [rank[p] for p in order]
    assert all(a < b for a, b in zip(ranks, ranks[1:])), dict(zip(order, ranks))
    assert rank["gnomon.models"] == rank["gnomon.recipes"] and rank["gnomon.__main__"] == rank["gnomon.interface"]
    for owner in set(ALLOWED.values()):
        assert owner in {"handoff", "outputs", "core", "forward"}


def test_engines_write_no_files_but_the_handoff():
    """The optimizer and sampler engines sit above the run files only so that the hand-off bundle can be
    saved beside its run; nothing else in them may use ``gnomon.io`` (they return traces, callers write)."""
    modules = module_files(ROOT / "src", "gnomon")
    offenders = sorted(
        f"{m} imports {b}"
        for m, p in modules.items()
        if m.startswith(("gnomon.optim", "gnomon.sampler")) and m != "gnomon.sampler.handoff_files"
        for b in imports_of(m, p, modules)
        if b.startswith("gnomon.io")
    )
    assert offenders == []


# ------------------------------------------------------------------------------------------------ the checker
_TABLE = """
| rank | layer | packages |
|---|---|---|
| 0 | low | `pkg.low` |
| 1 | mid | `pkg.mid` |
| 2 | high | `pkg.high`, `pkg` |
"""


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, body in {"pkg/__init__.py": "", "pkg/low/__init__.py": "", "pkg/mid/__init__.py": "",
                      "pkg/high/__init__.py": "", "pkg/high/h.py": "def run(): pass\n", **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(body))
    return tmp_path


def test_checker_passes_a_clean_package(tmp_path):
    src = _package(tmp_path, {
        "pkg/low/a.py": "import numpy as np\n",
        "pkg/mid/b.py": "from ..low import a\nfrom pkg.low.a import np\n",
        "pkg/high/c.py": "from pkg.mid import b\nimport pkg.low.a\nNAME = 'pkg.experiment'  # not a module\n",
    })
    assert check(src, "pkg", parse_layers(_TABLE), {}) == []


@pytest.mark.parametrize(
    "files, expected",
    [
        # an upward import hidden inside a function
        ({"pkg/low/a.py": "def f():\n    from pkg.high import h\n    return h\n"},
         "upward import: pkg.low.a (low, rank 0) imports pkg.high.h (high, rank 2)"),
        # an upward import through a relative import
        ({"pkg/mid/b.py": "from ..high.h import run\n"}, "upward import: pkg.mid.b (mid, rank 1) imports pkg.high.h"),
        # an upward import through a string registry (importlib)
        ({"pkg/low/reg.py": "REGISTRY = {'x': 'pkg.high.h:run'}\n"}, "upward import: pkg.low.reg (low, rank 0)"),
        # an upward import only for type checking
        ({"pkg/low/t.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.mid.b\n",
          "pkg/mid/b.py": ""}, "upward import: pkg.low.t (low, rank 0) imports pkg.mid.b"),
        # a cycle between two files of one layer, one side lazy
        ({"pkg/mid/b.py": "from pkg.mid import c\n", "pkg/mid/c.py": "def g():\n    import pkg.mid.b\n"},
         "import cycle: pkg.mid.b -> pkg.mid.c; pkg.mid.c -> pkg.mid.b"),
        # a module outside every layer
        ({"pkg/other/x.py": ""}, "pkg.other.x: in no layer"),
    ],
)
def test_checker_catches_new_violations(tmp_path, files, expected):
    problems = check(_package(tmp_path, files), "pkg", parse_layers(_TABLE), {})
    assert any(p.startswith(expected) for p in problems), problems


def test_checker_allowlist_is_exact_and_shrinks(tmp_path):
    src = _package(tmp_path, {"pkg/low/a.py": "def f():\n    from pkg.high import h\n"})
    layers = parse_layers(_TABLE)
    assert check(src, "pkg", layers, {("pkg.low.a", "pkg.high.h"): "someone"}) == []
    # an allowed edge does not excuse another one
    (tmp_path / "pkg/low/b.py").write_text("import pkg.mid\n")
    assert check(src, "pkg", layers, {("pkg.low.a", "pkg.high.h"): "someone"}) == [
        "upward import: pkg.low.b (low, rank 0) imports pkg.mid (mid, rank 1)"
    ]
    # once fixed, the entry must go
    (tmp_path / "pkg/low/a.py").write_text("")
    (tmp_path / "pkg/low/b.py").write_text("")
    assert check(src, "pkg", layers, {("pkg.low.a", "pkg.high.h"): "someone"}) == [
        "allowlist entry ('pkg.low.a', 'pkg.high.h') [someone] no longer occurs: delete it"
    ]
