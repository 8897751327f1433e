"""The report pack: figures and tables for a paper from finished runs.

    python -m mammo.report 'runs=[outputs/mammo_tiny_density/results_1,outputs/mammo_tiny_density/results_2]'

Writes ``outputs/report_pack/results_N/`` (``mammo.evaluation.report_pack``): training curves,
confusion matrices and Grad-CAM figures per run, ``metrics_table.{md,tex}``,
``subgroups_table.{md,tex}`` (per scanner, view, laterality, label-file column), ``report.json``,
``summary.json`` (``experiment_type: report``) and ``run.log``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mammo import CONFIG_DIR, TRUSTED_TARGETS
from mammo.artifacts.rundir import register_resolvers
from mammo.core.errors import install_compact_errors
from mammo.core.targets import trusted_task

register_resolvers()
install_compact_errors()


@hydra.main(config_path=CONFIG_DIR, config_name="report", execution_whitelist=TRUSTED_TARGETS)
@trusted_task(TRUSTED_TARGETS)
def main(cfg: DictConfig) -> None:
    from mammo.artifacts.closing import say_closing  # here, not above: --help stays fast
    from mammo.artifacts.summary import run_recorded
    from mammo.evaluation.report_pack import report_pack

    def body(out: Path, _) -> dict:
        report = report_pack([Path(r) for r in cfg.runs], out, str(cfg.get("level", "image")))
        return {"runs": [r["run_dir"] for r in report["runs"]], "artifacts": {"report": "report.json"}}

    out = Path(cfg.paths.run_dir)
    run_recorded("report", out, int(cfg.get("seed") or 0), body)
    say_closing("Report pack", out, f"\\input{{{out / 'metrics_table.tex'}}} in the paper (booktabs)")


if __name__ == "__main__":
    main()
