"""What hydra_plugins/mammo_optuna uses of hydra-optuna-sweeper, and what it may import of mammo."""

from __future__ import annotations

import ast
from pathlib import Path

from hydra_plugins.hydra_optuna_sweeper import _impl

PLUGIN = Path(__file__).resolve().parents[2] / "hydra_plugins" / "mammo_optuna"


def test_the_released_sweeper_still_has_what_the_plugin_extends():
    """Fails loudly when a hydra-optuna-sweeper release changes the internals _sweeper.py uses."""
    impl = _impl.OptunaSweeperImpl
    for name in ("_process_searchspace_config", "_parse_sweeper_params_config", "_get_directions"):
        assert callable(getattr(impl, name)), name
    assert callable(impl._configure_trials) and callable(_impl.create_params_from_overrides)
    space, fixed, fixed_overrides = _impl.create_params_from_overrides(["a=interval(0,1)", "b=3", "~c"])
    assert list(space) == ["a"] and fixed == {"b": "3"} and fixed_overrides == ["~c"]


def test_the_plugin_never_imports_mammo_run_files():
    """The job records its own trial; the plugin only uses mammo's Optuna adapters (and the
    one-line error every entry stops with)."""
    imported = set()
    for path in PLUGIN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
    assert {m for m in imported if m.split(".")[0] == "mammo"} == {
        "mammo.core.errors",
        "mammo.hpo.optuna_api",
        "mammo.hpo.storage",
    }
