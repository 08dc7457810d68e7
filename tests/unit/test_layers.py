"""The direction of imports between layers (DESIGN.md "Layers"), checked on the source.

Static: every ``import`` / ``from ... import`` in ``src/fedtee`` is read with :mod:`ast`
(relative imports resolved, ``importlib.import_module("...")`` string literals included),
so the rules hold for code paths a test run might never execute.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "fedtee"
GEN = "fedtee.wire._gen"

# Modules outside fedtee.wire that import the generated gRPC code today. The one-place rule
# says protobuf meets domain types only in fedtee.wire (serde); these are known debt, listed
# so the list can only shrink: a new importer fails the test, and a fixed one must be removed.
KNOWN_GEN_IMPORTERS: dict[str, frozenset[str]] = {
    "fedtee.server.service": frozenset(
        {
            f"{GEN}.fedtee.v1.federation_pb2",
            f"{GEN}.fedtee.v1.federation_pb2_grpc",
            f"{GEN}.fedtee.v1",
        }
    ),
    "fedtee.client.grpc_transport": frozenset(
        {
            f"{GEN}.fedtee.v1.federation_pb2",
            f"{GEN}.fedtee.v1.federation_pb2_grpc",
            f"{GEN}.fedtee.v1",
        }
    ),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p for p in PACKAGE.rglob("*.py") if not _module_name(p).startswith(GEN)
    }


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@cache
def _imports(module: str) -> frozenset[str]:
    """Every module ``module`` names in an import (``from a import b`` gives a and a.b)."""
    path = _modules()[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, path.name == "__init__.py")
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return frozenset(found)


def _closure(start: str) -> set[str]:
    """The fedtee modules ``start`` reaches through imports (static, transitive)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        current = todo.pop()
        if current in seen or current not in _modules():
            continue
        seen.add(current)
        todo.extend(m for m in _imports(current) if m.startswith("fedtee"))
    return seen


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _attest_modules() -> Iterator[str]:
    return (m for m in _modules() if _under(m, "fedtee.attest"))


def test_the_walk_sees_the_tree() -> None:
    # Guards the other tests against passing vacuously on an empty or mis-rooted walk.
    modules = _modules()
    assert "fedtee.attest.policy" in modules
    assert "fedtee.server.strategy" in modules
    assert "fedtee.attest.model" in _imports("fedtee.attest.policy")
    assert "fedtee.attest.trust.collateral" in _imports("fedtee.cli.server")  # import_module


def test_attest_never_imports_server_client_or_wire() -> None:
    offenders = {
        module: sorted(
            imp
            for imp in _imports(module)
            if any(_under(imp, p) for p in ("fedtee.server", "fedtee.client", "fedtee.wire"))
        )
        for module in _attest_modules()
    }
    assert {m: v for m, v in offenders.items() if v} == {}


def test_attest_reaches_no_outer_layer_even_transitively() -> None:
    reached = set().union(*(_closure(m) for m in _attest_modules()))
    outer = sorted(
        m for m in reached if not (_under(m, "fedtee.attest") or m in {"fedtee", "fedtee.errors"})
    )
    assert outer == []


def test_strategies_never_import_attest() -> None:
    reached = _closure("fedtee.server.strategy")
    assert "fedtee.server.strategy" in reached
    assert sorted(m for m in reached if _under(m, "fedtee.attest")) == []


def test_nothing_imports_pickle_or_marshal_or_calls_eval_exec() -> None:
    offenders: list[str] = []
    for module, path in _modules().items():
        for imp in _imports(module):
            if imp.split(".")[0] in {"pickle", "marshal", "shelve", "dill", "cloudpickle"}:
                offenders.append(f"{module} imports {imp}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = (
                    node.func.id
                    if isinstance(node.func, ast.Name)
                    else node.func.attr
                    if isinstance(node.func, ast.Attribute)
                    else None
                )
                if name in {"eval", "exec", "__import__"}:
                    offenders.append(f"{module} calls {name}()")
    assert offenders == []


def test_generated_protobuf_code_is_imported_only_by_the_wire_layer() -> None:
    importers = {
        module: frozenset(imp for imp in _imports(module) if _under(imp, GEN))
        for module in _modules()
        if not _under(module, "fedtee.wire")
    }
    importers = {m: v for m, v in importers.items() if v}
    new = {m: sorted(v) for m, v in importers.items() if m not in KNOWN_GEN_IMPORTERS}
    assert new == {}, "protobuf classes must stay behind fedtee.wire (serde)"
    fixed = sorted(set(KNOWN_GEN_IMPORTERS) - set(importers))
    assert fixed == [], f"remove {fixed} from KNOWN_GEN_IMPORTERS: the debt is paid"
    for module, names in importers.items():
        assert names <= KNOWN_GEN_IMPORTERS[module], (module, sorted(names))
    assert any(_under(imp, GEN) for imp in _imports("fedtee.wire.serde"))
