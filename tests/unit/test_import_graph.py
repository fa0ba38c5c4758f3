"""The house has floors, not circles: no import circle between our modules, imports inside functions included
(they only hide a circle from the interpreter, not from the reader), and every package has its __init__.py.

The graph is read from the source with ``ast`` (nothing is imported): an edge A -> B for each ``import``/``from``
anywhere in A naming module B (``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg``). A package's implicit import of its parents is not an edge. See docs/architecture.md for the floors.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# folder -> import name (setup.py's package-dir mapping)
PACKAGES = {"injector": "chaosinject", "analysis": "chaosinject.analysis"}


def modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    found = {}
    for folder in packages:
        name = packages[folder] if isinstance(packages, dict) else folder
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts and parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = path
    return found


def _targets(name: str, is_package: bool, node: ast.AST, known: dict[str, Path]) -> set[str]:
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = name.split(".") if is_package else name.split(".")[:-1]
            here = here[:len(here) - (node.level - 1)]
            base = ".".join(here + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    out = set()
    for target in names:
        while target and target not in known:   # `import a.b.c` where c is a name: the nearest module
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    known = modules(root, packages)
    graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):          # every level: module, function, class, TYPE_CHECKING blocks
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _targets(name, path.name == "__init__.py", node, known)
        graph[name] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _explain(graph, component) -> str:
    members = set(component)
    return "; ".join(f"{a} -> {b}" for a in component for b in sorted(graph[a] & members))


def test_no_import_circle():
    graph = import_graph(ROOT)
    assert len(graph) > 100                         # the walk saw the house, not an empty directory
    assert "chaosinject.engines.ebpf" in graph["chaosinject.engines.select"]   # function-level imports are edges
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(_explain(graph, c) for c in found)


# The floors of docs/architecture.md: a module imports its own floor and the floors below, never above.
FLOORS = {
    0: ("chaosinject.analysis", "chaosinject.errors", "chaosinject.extension", "chaosinject.files",
        "chaosinject.procfs", "chaosinject.spec", "chaosinject.cron", "chaosinject.plan", "chaosinject.blast",
        "chaosinject.crashpoints", "chaosinject.httpclient", "chaosinject.schedule"),
    1: ("chaosinject.kernel",),
    2: ("chaosinject.engines", "chaosinject.hostfaults"),
    3: ("chaosinject", "chaosinject.session", "chaosinject.run_base", "chaosinject.prepare", "chaosinject.runner", "chaosinject.summary", "chaosinject.targets",
        "chaosinject.library", "chaosinject.livestatus", "chaosinject.supervisor", "chaosinject.hostrun"),
    4: ("chaosinject.record", "chaosinject.experiment"),
    5: ("chaosinject.lab", "chaosinject.fleet"),
    6: ("chaosinject.cli", "chaosinject.network", "chaosinject.host"),
}


def floor_of(module: str) -> int:
    """The floor of the longest matching prefix in FLOORS."""
    best = None
    for floor, prefixes in FLOORS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (floor, len(prefix))
    assert best is not None, f"{module} is on no floor: add it to FLOORS and docs/architecture.md"
    return best[0]


def test_imports_go_down_the_floors_only():
    graph = import_graph(ROOT)
    upward = [f"{a} (floor {floor_of(a)}) -> {b} (floor {floor_of(b)})"
              for a in sorted(graph) for b in sorted(graph[a]) if floor_of(b) > floor_of(a)]
    assert not upward, "imports up a floor:\n" + "\n".join(upward)


def test_the_fleet_room_touches_no_kernel():
    """chaosinject.fleet drives other hosts' chaos-inject through Ansible: it plans and runs rounds, and never
    imports the layers that touch this host's kernel (kernel, engines, runs, recorders)."""
    graph = import_graph(ROOT)
    fleet = {m: graph[m] for m in graph if m == "chaosinject.fleet" or m.startswith("chaosinject.fleet.")}
    assert len(fleet) >= 4
    banned = ("chaosinject.kernel", "chaosinject.engines", "chaosinject.session", "chaosinject.run_base",
              "chaosinject.runner", "chaosinject.record", "chaosinject.library", "chaosinject.hostfaults")
    bad = [f"{a} -> {b}" for a, edges in sorted(fleet.items()) for b in sorted(edges)
           if any(b == p or b.startswith(p + ".") for p in banned)]
    assert not bad, "the fleet imports kernel-side code:\n" + "\n".join(bad)


def test_every_package_has_its_init():
    missing = sorted({str(p.parent.relative_to(ROOT)) for package in PACKAGES
                      for p in (ROOT / package).rglob("*.py") if not (p.parent / "__init__.py").exists()})
    assert not missing, f"directories of modules without __init__.py: {missing}"


def test_the_walk_finds_a_circle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "house"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import B\nA = 1\n")
    (pkg / "b.py").write_text("B = 2\ndef late():\n    from . import c\n    return c\n")
    (pkg / "c.py").write_text("import house.a as a\n")
    (pkg / "d.py").write_text("from house import a\nfrom house.b import late\n")
    graph = import_graph(tmp_path, ("house",))
    assert graph["house.d"] == {"house.a", "house.b"}
    assert circles(graph) == [["house.a", "house.b", "house.c"]]
    (pkg / "c.py").write_text("X = 3\n")
    assert circles(import_graph(tmp_path, ("house",))) == []


def test_shared_names_have_one_source():
    from chaosinject.engines import ebpf, edt, features, select
    from chaosinject.experiment import spec
    from chaosinject.record import experiment as record_experiment

    assert select.ENGINES["ebpf"].serves is features.EBPF_FEATURES is ebpf.EbpfEngine.features
    assert select.ENGINES["edt"].serves is features.EDT_FEATURES is edt.EdtEngine.features
    assert spec.EXTENSION_NAME is record_experiment.EXTENSION_NAME
    texts = [p.read_text() for p in modules(ROOT).values()]
    assert sum('EXTENSION_NAME = "' in t for t in texts) == 1
    assert sum("class ExperimentInvalid(" in t for t in texts) == 1
