"""The package's shape, as docs/design/architecture.md draws it: no import cycles, no upward imports,
small functions and modules, heavy imports only where ``--help`` speed needs them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENTRIES = {
    f"mammo.{n}"
    for n in (
        "train",
        "cv",
        "embed",
        "baselines",
        "evaluate",
        "predict",
        "export",
        "report",
        "runs",
        "compare",
        "review",
        "app",
    )
}
LAYERS = [
    "mammo.workflows",
    "mammo.webapp",
    "mammo.review_pages",
    "mammo.hpo",
    "mammo.embeddings",
    "mammo.evaluation",
    "mammo.models",
    "mammo.data",
    "mammo.readings",
]
"""Packages from the top down: a package imports only the ones after it, and the shared modules
(``mammo.artifacts``, ``mammo.distributed``, ``mammo.core`` and the one metric function,
``mammo.evaluation.metrics``, which validation epochs compute too)."""
SHARED = ("mammo.evaluation.metrics",)


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / "mammo").rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        out[name] = path
    return out


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The mammo modules ``path`` imports (``from mammo.x import y`` counts ``mammo.x.y`` when
    that is a module), anywhere in the file or only at module level."""
    known, found = modules(), set()
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m in known}


def function_lengths(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_import_cycles_among_mammo_modules():
    graph = {name: imports(path) - {name} for name, path in modules().items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("package", LAYERS)
def test_no_package_imports_one_above_it(package):
    above = LAYERS[: LAYERS.index(package)] + sorted(ENTRIES)
    for name, path in modules().items():
        if name == package or name.startswith(package + "."):
            upward = {
                m
                for m in imports(path)
                if m not in SHARED and any(m == a or m.startswith(a + ".") for a in above)
            }
            assert not upward, f"{name} imports {sorted(upward)}"


def test_library_modules_import_mammo_at_the_top():
    """Lazy imports are for the thin entries (``--help`` stays fast), for the sweep callback's
    study report, which Hydra builds for every run, and for the app's page (Gradio, an optional
    extra: its absence is one line)."""
    allowed = {("mammo.workflows.sweep", "mammo.hpo.study"), ("mammo.workflows.app_job", "mammo.webapp.ui")}
    for name, path in modules().items():
        if name in ENTRIES:
            continue
        lazy = imports(path) - imports(path, top_level_only=True)
        assert not {(name, m) for m in lazy} - allowed, f"{name} imports {sorted(lazy)} inside a function"


def test_no_function_over_60_lines():
    long = [
        f"{path.relative_to(REPO)}:{line} {name} ({n} lines)"
        for folder in ("mammo", "hydra_plugins", "scripts", "tests")
        for path in sorted((REPO / folder).rglob("*.py"))
        for name, line, n in function_lengths(path)
        if n > 60
    ]
    assert not long, long


STAGES = {f"mammo.data.{stage}" for stage in ("labels", "scan", "images", "cache", "datamodule")}
STAGES.add("mammo.models.classifier")  # predict: the model and the losses it is trained with
"""The stages of one sample's path (docs/design/architecture.md): a file each, so that a reader follows a
sample through a handful of files (``tests/test_sample_path.py`` measures it); they may hold up to
800 lines, every other library module 300."""


def test_no_module_over_300_lines_but_the_entries_and_the_stages():
    long = [
        f"{name} ({path.read_text().count(chr(10))} lines)"
        for name, path in modules().items()
        if name not in ENTRIES and path.read_text().count("\n") > (800 if name in STAGES else 300)
    ]
    assert not long, long


def test_no_two_modules_share_a_name():
    """A name says which module: ``settings`` or ``export`` in two packages (or a module named as
    a package) makes a reader, and a traceback, ambiguous. The entries' names are theirs alone."""
    names: dict[str, list[str]] = {}
    for name in modules():
        if name != "mammo":
            names.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    shared = {n: found for n, found in names.items() if len(found) > 1}
    assert not shared, shared


def test_the_package_root_holds_only_the_entries():
    """The entries are ``python -m mammo.<entry>``; every library module lives in a package."""
    root = {name for name, path in modules().items() if name.count(".") == 1 and path.name != "__init__.py"}
    assert root == ENTRIES, sorted(root ^ ENTRIES)


def test_library_modules_do_not_take_the_composed_config():
    """Only the entries, the workflows and the config's own checks (``mammo.core``) read ``cfg``;
    library functions take the settings they use (small dataclasses or explicit arguments)."""
    readers = ("mammo.workflows", "mammo.core")
    found = []
    for name, path in modules().items():
        if name in ENTRIES or name.startswith(readers):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                    annotation = ast.unparse(arg.annotation) if arg.annotation else ""
                    if arg.arg == "cfg" or "DictConfig" in annotation:
                        found.append(f"{name}.{node.name}({arg.arg})")
    assert not found, found


def test_no_library_function_is_named_like_a_test():
    """``pytest mammo/data/datamodule.py`` collected the library function ``test_rows`` as a test,
    which then errored: pytest collects every ``test*`` function of a module it is given."""
    named = [
        f"{name}.{node.name}"
        for name, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.name.lower().startswith("test")
    ]
    assert not named, named
