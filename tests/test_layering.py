"""The import layering of the product packages, checked on their source (AST) without importing it.

LAYERS is the one table of the layering; README (Layout) refers to it. Each row is
(layer, unit, module patterns). A module belongs to the unit of its most specific pattern: a pattern
names a module and everything under it, and a `*` part stands for any one name, which becomes part of
the unit, so `learner.algorithms.*` makes every folder in learner/algorithms/ (present or future) its
own unit, while `learner.algorithms` alone (its __init__.py) is the registry. Rules, for every import
(module level, inside functions, under `if TYPE_CHECKING:`; relative ones resolved):

1. a module imports from its own unit and from units in lower layers only; units in one layer are
   peers and never import each other; the entry points (top layer) are imported by nothing;
2. no module imports a private name (`_x`, not dunder) of another unit, neither `from a.b import _x`
   nor `import a.b as m` ... `m._x`;
3. project imports inside a def are listed, unless FUNCTION_IMPORT_ALLOWLIST gives the reason.

Generated protos/*_pb2*.py files are not checked themselves, but imports of them are.
"""

import ast
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS = (
    (0, "protos", ("protos",)),
    (1, "planner_api", ("planner_api",)),
    (1, "policy", ("policy",)),
    (2, "rollout", ("rollout",)),
    (2, "llm_server", ("llm_server",)),
    (3, "learner core", ("learner",)),
    (4, "learner.algorithms.<name>", ("learner.algorithms.*",)),
    (5, "composition", ("learner.algorithms", "learner.config")),
    (6, "lab", ("lab",)),
    (7, "learner.main", ("learner.main",)),
    (7, "learner.evaluate", ("learner.evaluate",)),
    (7, "learner.report", ("learner.report",)),
    (7, "learner.scaling", ("learner.scaling",)),
)
ENTRY_LAYER = max(row[0] for row in LAYERS)
PACKAGES = tuple(dict.fromkeys(p.split(".")[0] for row in LAYERS for p in row[2]))
GENERATED = "protos/*_pb2*.py"
SEE = "(see README, Layout)"

# "module:function" (function as its qualified name, e.g. "learner.main:Driver.run") -> the reason
# that project import has to stay inside that function.
FUNCTION_IMPORT_ALLOWLIST: dict[str, str] = {
    "llm_server.backends:_vllm_backend": "vLLM is imported only where the vllm backend is asked for: machines set up "
                                         "with --no-llm have no vLLM, and the heuristic backend must still load",
}


def unit_of(module):
    """(layer, unit) of a project module, from its most specific LAYERS pattern; None if none."""
    parts, best = module.split("."), None
    for layer, unit, patterns in LAYERS:
        for pattern in patterns:
            p = pattern.split(".")
            if len(p) <= len(parts) and all(a in ("*", b) for a, b in zip(p, parts)):
                if best is None or len(p) > best[0]:
                    best = (len(p), layer, ".".join(parts[: len(p)]) if p[-1] == "*" else unit)
    return None if best is None else best[1:]


def load_tree(root):
    """{module: (path relative to root, source)} of every .py file under the product packages."""
    tree = {}
    for package in PACKAGES:
        for path in sorted((Path(root) / package).rglob("*.py")):
            rel = path.relative_to(root)
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            tree[".".join(parts)] = (rel.as_posix(), path.read_text(encoding="utf-8"))
    return tree


def _absolute(module, is_package, level, name):
    """The absolute module a (possibly relative) `from` import names; None if it leaves the tree."""
    if not level:
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(base) or level - 1 == len(base) and not name:
        return None
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id] + parts[::-1] if isinstance(node, ast.Name) else None


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def check(tree, allowlist=None):
    """All violations in a {module: (path, source)} tree: {rule: [message, ...]}."""
    known = {".".join(m.split(".")[:i]) for m in tree for i in range(1, m.count(".") + 2)}
    allowlist = FUNCTION_IMPORT_ALLOWLIST if allowlist is None else allowlist
    found = {"layers": [], "peers": [], "private": [], "function": []}
    used_allowlist = set()
    for module, (path, source) in sorted(tree.items()):
        if fnmatch(path, GENERATED):
            continue
        src_layer, src_unit = unit_of(module)
        is_package = path.endswith("__init__.py")
        aliases, records = {}, []  # records: (node, target module, private name or None, def)

        def visit(node, scope, in_def):
            for child in ast.iter_child_nodes(node):
                func = ".".join(scope) if in_def else None
                if isinstance(child, ast.Import):
                    for a in child.names:
                        if a.name.split(".")[0] in PACKAGES:
                            records.append((child, a.name, None, func))
                            top = a.name.split(".")[0]
                            aliases[a.asname or top] = a.name if a.asname else top
                elif isinstance(child, ast.ImportFrom):
                    base = _absolute(module, is_package, child.level, child.module)
                    if base is None or base.split(".")[0] not in PACKAGES:
                        continue
                    for a in child.names:
                        sub = f"{base}.{a.name}"
                        if sub in known:
                            aliases[a.asname or a.name] = sub
                        records.append((child, sub if sub in known else base,
                                        a.name if _private(a.name) else None, func))
                is_def = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                if is_def or isinstance(child, ast.ClassDef):
                    visit(child, scope + [child.name], in_def or is_def)
                else:
                    visit(child, scope, in_def)

        syntax = ast.parse(source, path)
        visit(syntax, [], False)
        for node in ast.walk(syntax):  # `import a.b as m` ... `m._x`
            parts = _dotted(node) if isinstance(node, ast.Attribute) else None
            if parts and parts[0] in aliases:
                full = aliases[parts[0]].split(".") + parts[1:]
                n = max(i for i in range(1, len(full) + 1) if ".".join(full[:i]) in known or i == 1)
                if n < len(full) and _private(full[n]):
                    records.append((node, ".".join(full[:n]), full[n], None))
        for node, target, private, func in records:
            where, unit = f"{path}:{node.lineno}", unit_of(target)
            if unit is None:
                continue
            layer, tgt_unit = unit
            text = ast.unparse(node) if isinstance(node, (ast.Import, ast.ImportFrom)) else None
            if text and tgt_unit != src_unit and layer > src_layer:
                why = ("entry points are never imported by product modules" if layer == ENTRY_LAYER
                       else "imports must point to lower layers")
                found["layers"].append(f"{where} imports {target} (layer {layer} '{tgt_unit}') from layer "
                                       f"{src_layer} '{src_unit}': {why} {SEE}")
            elif text and tgt_unit != src_unit and layer == src_layer:
                found["peers"].append(f"{where} imports {target} ('{tgt_unit}') from its peer '{src_unit}', "
                                      f"both layer {layer}: units in one layer never import each other {SEE}")
            if private and tgt_unit != src_unit:
                found["private"].append(f"{where} uses private name {private} of {target} (unit '{tgt_unit}') "
                                        f"from unit '{src_unit}': make it public or move the code {SEE}")
            if func and text:
                key = f"{module}:{func}"
                if key in allowlist:
                    used_allowlist.add(key)
                else:
                    found["function"].append(f"{where} `{text}` inside {key}: move it to module level, "
                                             f"or add '{key}' with its reason to FUNCTION_IMPORT_ALLOWLIST")
    for key in sorted(set(allowlist) - used_allowlist):
        found["function"].append(f"FUNCTION_IMPORT_ALLOWLIST entry '{key}' matches no import: remove it")
    return {rule: list(dict.fromkeys(messages)) for rule, messages in found.items()}


@pytest.fixture(scope="module")
def violations():
    tree = load_tree(ROOT)
    assert tree, f"no product modules found under {ROOT}"
    return check(tree)


def _report(messages, what):
    if messages:
        pytest.fail(f"{len(messages)} {what}:\n" + "\n".join(messages), pytrace=False)


def test_imports_point_to_lower_layers(violations):
    _report(violations["layers"], "imports go up the layers")


def test_peer_units_do_not_import_each_other(violations):
    _report(violations["peers"], "imports between peer units")


def test_no_private_names_across_units(violations):
    _report(violations["private"], "private names used across units")


def test_no_function_level_project_imports(violations):
    _report(violations["function"], "function-level project imports")


def test_checker_reports_each_kind_of_violation(tmp_path):
    files = {
        "protos/__init__.py": "_SECRET = 1\n",
        "protos/planner_pb2.py": "import learner.main\n",  # generated: not checked
        "policy/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rollout.world import W\n",
        "rollout/__init__.py": "",
        "rollout/world.py": "from protos import planner_pb2, _SECRET\nfrom llm_server import server\nW = 1\n",
        "llm_server/server.py": "import protos as p\nX = p._SECRET\n",
        "policy/masking.py": "import rollout.world\nY = rollout.world._Z\n",
        "learner/algorithms/laac/model.py": "from ..lerl import pool\nfrom . import other\n"
                                            "def f():\n    import learner.main\n",
        "learner/algorithms/laac/other.py": "",
        "learner/algorithms/lerl/pool.py": "",
        "learner/main.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = check(load_tree(tmp_path), allowlist={})
    expect = {
        "layers": ["policy/__init__.py:3 imports rollout.world (layer 2 'rollout') from layer 1 'policy'",
                   "policy/masking.py:1 imports rollout.world (layer 2",
                   "learner/algorithms/laac/model.py:4 imports learner.main (layer 7 'learner.main')"],
        "peers": ["rollout/world.py:2 imports llm_server.server ('llm_server') from its peer 'rollout'",
                  "laac/model.py:1 imports learner.algorithms.lerl.pool ('learner.algorithms.lerl')"],
        "private": ["rollout/world.py:1 uses private name _SECRET of protos",
                    "llm_server/server.py:2 uses private name _SECRET of protos",
                    "policy/masking.py:2 uses private name _Z of rollout.world"],
        "function": ["learner/algorithms/laac/model.py:4 `import learner.main` inside "
                     "learner.algorithms.laac.model:f"],
    }
    for rule, needles in expect.items():
        for needle in needles:
            assert any(needle in m for m in found[rule]), (rule, needle, found[rule])
        assert len(found[rule]) == len(needles), (rule, found[rule])
