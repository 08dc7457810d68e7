"""Every ``__all__`` in fedtee names something that exists, and fedtee.attest stays light."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
# Third-party packages that only optional extras install; a module needing one is skipped.
OPTIONAL = {"tpm2_pytss", "torch", "matplotlib", "sklearn", "atheris"}


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _declares_all(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.Assign | ast.AnnAssign)
        and any(
            isinstance(t, ast.Name) and t.id == "__all__"
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
        for node in tree.body
    )


MODULES = sorted(
    _name(p) for p in (SRC / "fedtee").rglob("*.py") if "_gen" not in p.parts and _declares_all(p)
)
PACKAGES = sorted(_name(p) for p in (SRC / "fedtee").rglob("__init__.py") if "_gen" not in p.parts)


def test_the_scan_found_the_public_modules() -> None:
    assert {"fedtee.attest", "fedtee.errors", "fedtee.attest.model", "fedtee.ledger"} <= set(
        MODULES
    )


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_all_exists(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional {exc.name}")
        raise
    exported = module.__all__
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == []


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_imports(name: str) -> None:
    importlib.import_module(name)


def test_attest_exports_the_documented_api() -> None:
    import fedtee.attest as attest
    from fedtee.attest.model import Evidence
    from fedtee.attest.policy import evaluate

    for name in (
        "Evidence",
        "TeeType",
        "VerifiedEvidence",
        "TrustAnchors",
        "TcbStatus",
        "Policy",
        "AttestationResult",
        "Status",
        "Violation",
        "appraise",
        "evaluate",
        "verifier_for",
        "report_data",
        "embedded_anchors",
    ):
        assert name in attest.__all__
        assert name in dir(attest)
    assert attest.Evidence is Evidence
    assert attest.evaluate is evaluate
    with pytest.raises(AttributeError):
        attest.no_such_name  # noqa: B018


def test_importing_fedtee_attest_loads_no_backend() -> None:
    code = (
        "import sys, fedtee.attest as a\n"
        "print(sorted(m for m in sys.modules if m.startswith('fedtee.attest.')))\n"
        "a.TeeType\n"
        "print('cryptography' in sys.modules)\n"
        "print(sorted(m for m in sys.modules if m.startswith('fedtee.attest.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "[]"
    assert out[1] == "False"
    assert out[2] == "['fedtee.attest.model']"
