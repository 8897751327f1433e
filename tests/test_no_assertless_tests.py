"""A test that asserts nothing passes whatever the code does: every test function asserts, directly
or through a helper that does (``pytest.raises``, ``*.testing.assert_*``, a test helper with an
``assert``), or is listed here with the reason it needs none."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
WHY_NO_RAISE = (
    "check_train_settings raises ConfigError for a bad value, so passing is the proof that these "
    "settings are accepted; its refusals are asserted in test_a_bad_setting_stops_before_any_work"
)
ACCEPTED: dict[str, str] = {
    "tests/core/test_train_settings.py::test_the_shipped_settings_pass": WHY_NO_RAISE,
    "tests/core/test_train_settings.py::test_derived_keys_that_agree_pass": WHY_NO_RAISE,
}
"""``path::test`` -> why it asserts nothing and still proves something."""
CHECKING_CALLS = ("raises", "warns", "fail", "deprecated_call", "approx")
"""``pytest.<name>`` calls that check (``pytest.fail`` reports a failure itself)."""


def called_names(node: ast.AST) -> set[str]:
    """The names a function calls: ``f(...)`` -> ``f``, ``a.b.c(...)`` -> ``a.b.c``."""
    names = set()
    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
        parts, target = [], call.func
        while isinstance(target, ast.Attribute):
            parts.append(target.attr)
            target = target.value
        if isinstance(target, ast.Name):
            parts.append(target.id)
        names.add(".".join(reversed(parts)))
    return names


def checks_directly(function: ast.AST) -> bool:
    """An ``assert``, ``pytest.raises``/``warns``/``fail``, or a ``*.testing.assert_*`` call."""
    if any(isinstance(n, ast.Assert) for n in ast.walk(function)):
        return True
    for name in called_names(function):
        last = name.rsplit(".", 1)[-1]
        if name.startswith("pytest.") and last in CHECKING_CALLS:
            return True
        if ".testing." in f".{name}" and last.startswith("assert"):
            return True
    return False


def module_of(name: str) -> Path | None:
    """``tests.a.b`` -> ``tests/a/b.py`` (``None`` outside the test tree)."""
    path = TESTS.parent / (name.replace(".", "/") + ".py")
    return path if name.startswith("tests.") and path.is_file() else None


def scopes() -> dict[Path, dict[str, tuple[Path, ast.AST | None]]]:
    """Per test-tree file, the helpers its functions can call by name: its own functions and what
    it imports from other test modules (``from tests.x import f``), each as ``(file, node)``."""
    trees = {path: ast.parse(path.read_text()) for path in sorted(TESTS.rglob("*.py"))}
    own = {
        path: {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        for path, tree in trees.items()
    }
    out = {}
    for path, tree in trees.items():
        scope = {name: (path, node) for name, node in own[path].items()}
        for node in ast.walk(tree):
            source = module_of(node.module) if isinstance(node, ast.ImportFrom) and node.module else None
            for alias in node.names if source else []:
                if alias.name in own.get(source, {}):
                    scope[alias.asname or alias.name] = (source, own[source][alias.name])
        out[path] = scope
    return out


def checking_functions(scope_of: dict) -> set[tuple[Path, str]]:
    """``(file, name)`` of each function that checks, directly or by calling (by name, in its own
    file's scope) one that does, to a fixpoint."""
    nodes = {(path, node.name): node for scope in scope_of.values() for path, node in scope.values()}
    checking = {key for key, node in nodes.items() if checks_directly(node)}
    while True:
        more = set()
        for (path, name), node in nodes.items():
            if (path, name) in checking:
                continue
            scope = scope_of[path]
            called = {n for n in called_names(node) if "." not in n and n in scope}
            if any((scope[n][0], scope[n][1].name) in checking for n in called):
                more.add((path, name))
        if not more:
            return checking
        checking |= more


def assertless_tests() -> list[str]:
    scope_of = scopes()
    checking = checking_functions(scope_of)
    return sorted(
        f"{path.relative_to(TESTS.parent)}::{name}"
        for path, scope in scope_of.items()
        if path.name.startswith("test_")
        for name, (where, _) in scope.items()
        if name.startswith("test_") and where == path and (path, name) not in checking
    )


def test_every_test_asserts_something():
    missing = [where for where in assertless_tests() if where not in ACCEPTED]
    assert not missing, (
        f"tests that assert nothing (assert, or list them in ACCEPTED with a reason): {missing}"
    )


def test_the_scan_finds_a_test_without_an_assert(tmp_path, monkeypatch):
    """The scan itself: an assert-free test is caught; an assert in a helper, ``pytest.raises`` and
    ``np.testing`` count; a helper of the same name in another file does not."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "helpers.py").write_text("def helper(x):\n    assert x\n")
    (tmp_path / "tests" / "other.py").write_text("def run(x):\n    assert x\n")
    (tmp_path / "tests" / "test_some.py").write_text(
        "import pytest\nimport numpy as np\nfrom tests.helpers import helper\n"
        "def run(x):\n    return x\n"
        "def test_uses_helper():\n    helper(1)\n"
        "def test_nothing():\n    print(1)\n"
        "def test_runs_only():\n    run(1)\n"
        "def test_raises():\n    with pytest.raises(ValueError):\n        int('x')\n"
        "def test_close():\n    np.testing.assert_allclose(1, 1)\n"
    )
    monkeypatch.setattr(__import__(__name__, fromlist=["TESTS"]), "TESTS", tmp_path / "tests")
    assert assertless_tests() == ["tests/test_some.py::test_nothing", "tests/test_some.py::test_runs_only"]
