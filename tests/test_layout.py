"""The package's layout: imports between recbole_ssr modules point one way only (no cycle, counting imports inside
functions too), and no module imports another module's private (``_name``) attribute."""

import ast
import os

from conftest import REPO_ROOT

PACKAGE = "recbole_ssr"


def package_modules():
    """{dotted module name: parsed file} of every module of the package."""
    root = os.path.join(REPO_ROOT, PACKAGE)
    modules = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, REPO_ROOT)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            with open(path, "r", encoding="utf-8") as f:
                modules[".".join(parts)] = ast.parse(f.read(), filename=path)
    return modules


def imports_of(name, tree, modules):
    """[(imported module, imported attribute or None)] of every import in ``tree`` (any depth) that names a module
    of the package; relative imports resolved."""
    package = name if name in modules and _is_package(name) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in modules else (base, alias.name))
    return found


def _is_package(name):
    return os.path.isfile(os.path.join(REPO_ROOT, *name.split("."), "__init__.py"))


def graph():
    modules = package_modules()
    edges = {name: set() for name in modules}
    private = []
    for name, tree in modules.items():
        for target, attribute in imports_of(name, tree, modules):
            module = target
            while module not in modules and "." in module:
                module = module.rpartition(".")[0]
            if module != name and module in modules:
                edges[name].add(module)
            if attribute and attribute.startswith("_") and not attribute.startswith("__") and module != name:
                private.append(f"{name} imports {module}.{attribute}")
    return edges, private


def find_cycle(edges):
    """One cycle of the directed graph as a list of nodes, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_among_package_modules():
    edges, _ = graph()
    assert len(edges) > 40 and edges["recbole_ssr.cli"], "the module scan found too little"
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_a_private_name_of_another():
    _, private = graph()
    assert not private, "\n".join(private)


def test_the_checker_sees_cycles_and_function_level_imports():
    modules = {"recbole_ssr.a": ast.parse("def f():\n    from recbole_ssr.b import _x\n"),
               "recbole_ssr.b": ast.parse("import recbole_ssr.a\n")}
    assert imports_of("recbole_ssr.a", modules["recbole_ssr.a"], modules) == [("recbole_ssr.b", "_x")]
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


#: the layers, bottom up: a module may import modules of its own folder and of lower layers only; ``data`` and
#: ``model`` stand side by side (neither imports the other). "" is the package itself (its Python API).
LAYERS = {"core": 0, "data": 1, "model": 1, "config": 2, "training": 3, "experiments": 4, "": 5, "benchmark": 5,
          "cli": 6}


def layer_of(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_imports_point_down_the_layers():
    edges, _ = graph()
    unknown = sorted({layer_of(m) for m in edges} - set(LAYERS))
    assert not unknown, f"modules outside the known layers: {unknown}; give each a place in LAYERS"
    upward = [f"{a} -> {b}" for a, targets in edges.items() for b in targets
              if layer_of(a) != layer_of(b) and LAYERS[layer_of(a)] <= LAYERS[layer_of(b)]]
    assert not upward, "imports that do not point down a layer:\n" + "\n".join(sorted(upward))


def test_the_layer_rule_sees_an_upward_import():
    assert LAYERS[layer_of("recbole_ssr.model.ssr")] <= LAYERS[layer_of("recbole_ssr.training.trainer")]
    assert LAYERS[layer_of("recbole_ssr.data.dataset")] <= LAYERS[layer_of("recbole_ssr.model.abstract")]


def test_few_loose_modules():
    loose = sorted(m for m in graph()[0] if m.count(".") == 1 and not _is_package(m))
    assert len(loose) <= 4, f"modules loose at the package's top: {loose}; give them a layer folder"
