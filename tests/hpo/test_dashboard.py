"""optuna-dashboard opens the study mammo wrote (``hpo_runs/optuna.db``) as it is."""

from __future__ import annotations

import pytest

from tests.hpo.test_hpo import STUDY, search, study
from tests.servers import dashboard_server, get_json


@pytest.mark.slow
def test_the_dashboard_reads_every_trial_of_a_study(tmp_path, demo_root):
    # 4 trials, one weight decay failing its setting check; then one more, pruned by a threshold
    # that no val_kappa reaches
    failing = ["hydra.sweeper.n_trials=4", "hydra.sweeper.max_failure_rate=1.0"]
    space = ["weight_decay=choice(0.0001,-1.0)", "~hydra.sweeper.params.loss"]  # both values in 4 draws
    assert search(tmp_path, demo_root, *failing, *space) == 0
    pruned = ["hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=1.0"]
    pruned += ["hydra.sweeper.pruner.n_warmup_steps=0", "hydra.sweeper.n_trials=5", "weight_decay=0.0001"]
    pruned += ["hydra.sweeper.max_failure_rate=1.0"]
    assert search(tmp_path, demo_root, *pruned) == 0
    expected = {t.number: (t.state.name.capitalize(), t.value) for t in study(tmp_path).get_trials()}
    assert {state for state, _ in expected.values()} == {"Complete", "Fail", "Pruned"}

    with dashboard_server(f"sqlite:///{tmp_path}/mammo_tiny_density/hpo_runs/optuna.db") as url:
        studies = get_json(f"{url}/api/studies")["study_summaries"]
        (listed,) = [s for s in studies if s["study_name"] == STUDY]
        detail = get_json(f"{url}/api/studies/{listed['study_id']}")
    shown = {t["number"]: (t["state"], t.get("values", [None])[0]) for t in detail["trials"]}
    assert {n: state for n, (state, _) in shown.items()} == {n: state for n, (state, _) in expected.items()}
    for number, (state, value) in expected.items():
        if state == "Complete":
            assert shown[number][1] == pytest.approx(value)
    assert {p["name"] for t in detail["trials"] for p in t["params"]} >= {"dropout_rate", "weight_decay"}
