"""The package's import order: each module imports only from layers below its own.

Every ``import`` counts, including those inside functions, so a lazy import cannot hide a
cycle. ``__main__`` modules are entry points (run, never imported) and are not checked.
"""

import ast
import os

from conftest import ROOT

# Lowest first. A module belongs to the longest unit (module or package prefix) that names it;
# it may import its own unit and units of lower layers, nothing in its layer or above.
LAYERS = [
    ("tljax.defaults", "tljax.params", "tljax.metrics", "tljax.losses", "tljax.data.preprocess"),
    ("tljax.models",),
    ("tljax.lora", "tljax.convert"),
    ("tljax.pretrained",),
    ("tljax.data",),
    ("tljax.wordvec", "tljax.strategies", "tljax.export"),
    ("tljax.optim", "tljax.checkpoint", "tljax.distributed"),
    ("tljax.config",),
    ("tljax.train.workdir", "tljax.train.step", "tljax.train.host_memory", "tljax.train.report",
     "tljax.train.selection"),
    ("tljax.train.devices",),
    ("tljax.train.evaluate", "tljax.train.state", "tljax.train.faults"),
    ("tljax.train.loop",),
    ("tljax.train",),
    ("tljax.methods",),
    ("tljax.run", "tljax.api"),
    ("tljax",),
]


def modules():
    """``{module name: path}`` of every module in the package."""
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "tljax")):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
                found[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, name)
    return found


def imports(path, module):
    """Every tljax module ``path`` imports (absolute, or relative resolved from ``module``)."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "tljax")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "tljax":
                known = modules()
                yield from (f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)


def unit_of(module):
    units = [(u, i) for i, layer in enumerate(LAYERS) for u in layer if module == u or module.startswith(u + ".")]
    assert units, f"{module} belongs to no layer: add it to LAYERS in tests/test_layers.py"
    return max(units, key=lambda ui: len(ui[0]))


def test_every_import_points_down_the_layers():
    bad = []
    for module, path in sorted(modules().items()):
        if module.endswith("__main__"):
            continue
        unit, layer = unit_of(module)
        for target in imports(path, module):
            other, other_layer = unit_of(target)
            if other != unit and other_layer >= layer:
                bad.append(f"{module} (layer {layer}: {unit}) imports {target} (layer {other_layer}: {other})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_check_sees_lazy_imports():
    # the walk must see imports inside functions, or a lazy import could hide an upward one
    source = "def f():\n    from tljax.train import loop\n"
    path = os.path.join(ROOT, "tests", ".lazy_probe.py")
    with open(path, "w") as f:
        f.write(source)
    try:
        assert list(imports(path, "tljax.models.probe")) == ["tljax.train.loop"]
    finally:
        os.remove(path)


def test_no_private_jax_or_orbax_imports():
    offenders = [f"{m}: {t}" for m, p in modules().items() for t in _all_imports(p)
                 if t.startswith(("jax._src", "orbax.checkpoint._src", "flax._src"))]
    assert not offenders, offenders


def _all_imports(path):
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
