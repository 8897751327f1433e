"""One training run (or one CV fold) into its run directory, in named steps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from mammo.artifacts.files import prediction_arrays
from mammo.artifacts.io import as_output_error
from mammo.artifacts.run_callbacks import RunArtifacts
from mammo.artifacts.runlog import route_library_logs
from mammo.core.errors import ResumeRefused, unwrap_worker_error
from mammo.core.interrupts import raise_if_requested
from mammo.data.scan import manifest_changes
from mammo.evaluation.calibration import store_temperature, write_reliability
from mammo.evaluation.checkpoint_eval import evaluate_test_split
from mammo.evaluation.gradcam import EXPLANATIONS, gradcam_samples
from mammo.evaluation.intervals import add_val_intervals, read_best_epoch
from mammo.evaluation.levels import write_levels
from mammo.evaluation.metrics import SHORT_NAMES
from mammo.evaluation.subgroups import SUBGROUP_COLUMNS, label_subgroups, with_subgroups, write_subgroups
from mammo.review_pages.build import write_review
from mammo.workflows.components import (
    build_callbacks,
    build_datamodule,
    build_model,
    build_trainer,
    eval_settings,
    record_data,
    use_fold,
)
from mammo.workflows.lr_finder import tune_learning_rate
from mammo.workflows.resume import record_resume_command, record_start, resume_point
from mammo.workflows.run_context import Run

log = logging.getLogger("mammo")
BEST_LOGGED = ("best_val_kappa", "best_val_acc", "best_val_macro_f1")


def fit_run(
    cfg: DictConfig,
    run_dir: Path,
    fold: int | None = None,
    datamodule=None,
    cv_dir: Path | None = None,
    link=None,
) -> float:
    """Train into ``run_dir``; returns the best epoch's ``monitor`` value.

    Args:
        fold: the CV fold this run validates on (recorded as ``integration.cv_fold``).
        datamodule: a set-up datamodule to reuse (the folds of one process share it).
        cv_dir: where the fold assignment (``folds.csv``) goes.
        link: the HPO trial to report every epoch to (``mammo.hpo.trial.TrialLink``), which may
            stop the run early; it then ends with status ``pruned``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    run = Run.start(cfg, run_dir, fold, cv_dir, link, datamodule)
    log.info(
        "Starting density classification training%s", f" (fold {fold} of {cfg.cv.folds})" if fold else ""
    )
    log.info("Run directory: %s", run_dir)
    try:
        return fit_steps(run)
    except ResumeRefused:
        run.summary.restore()  # the run stays as it was: interrupted, resumable with its own data
        raise
    except BaseException as exc:
        exc = as_output_error(unwrap_worker_error(exc), run_dir)
        run.fail(exc)
        raise exc from None


def fit_steps(run: Run) -> float:
    """Data → model → callbacks and trainer → fit → the run's report."""
    route_library_logs()
    cfg = run.cfg
    run.datamodule = run.datamodule or build_datamodule(run)
    use_fold(run)
    use_units(run)
    if cfg.get("resume"):
        refuse_changed_data(run.directory, run.datamodule.manifest)
    record_start(run, resume_point(run.directory) if cfg.get("resume") else 0)
    if cfg.get("resume") and run.writes:
        record_resume_command(run.directory, cfg)
    raise_if_requested()  # a Ctrl-C lost while the data was read stops the run here
    # seeded after the data is ready (preparing it may draw random numbers), so that a fold
    # trains the same whether it runs alone or after other folds in one process
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    record_data(run)
    run.model = build_model(run)
    if not tune_learning_rate(run):  # tune=lr_find without tune.apply: the finder was the job
        return float("nan")
    data = run.datamodule
    run.artifacts = RunArtifacts(run.directory, data.val_table, data.samples.class_labels, cfg.monitor)
    run.trainer = build_trainer(run, build_callbacks(run))
    fit(run)
    if run.writes:  # another DDP rank: rank zero reports and writes the rest
        finish(run)
    return run.artifacts.best_metrics().get(f"best_{cfg.monitor}", float("nan"))


def use_units(run: Run) -> None:
    """A multi-view model (``model.unit``) is fed whole breasts or exams; run.log says what the
    run's per-image prediction files then hold."""
    unit = run.cfg.model.get("unit")
    run.datamodule.feed_units(unit)
    if unit:
        log.info(
            "model.unit=%s: the model predicts %ss; every image of val_predictions.csv holds its %s's "
            "prediction, and val_predictions_%s.csv the model's %ss",
            unit,
            unit,
            unit,
            unit,
            unit,
        )


def refuse_changed_data(run_dir: Path, manifest: dict) -> None:
    """A resumed run trains on the data it started with: a dataset whose files or labels changed
    since (``data_manifest.json``) is refused with one line saying what changed."""
    saved = run_dir / "data_manifest.json"
    if not saved.is_file():
        return  # the run stopped before its data was recorded
    changes = manifest_changes(json.loads(saved.read_text()), manifest)
    if changes:
        raise ResumeRefused(
            f"resume={run_dir}: the data changed since the run started ({changes}); a resumed run "
            "continues on its own data: restore it, or train a new run"
        )


def fit(run: Run) -> None:
    """``trainer.fit``, from ``checkpoints/last.ckpt`` with ``resume``. Ctrl-C or SIGTERM, which
    Lightning turns into an exit after shutting down, ends it as :class:`KeyboardInterrupt`."""
    cfg, run_dir, trainer, model = run.cfg, run.directory, run.trainer, run.model
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if cfg.get("resume") and last.is_file() else None
    if cfg.get("resume"):
        log.info("Resuming from %s" if ckpt_path else "No checkpoint in %s: starting from scratch", last)
    fitted = model
    if cfg.get("compile"):  # opt-in: compiling costs time up front, pays back on long GPU runs
        log.info("torch.compile: the model is compiled on its first batches")
        fitted = torch.compile(model)  # shares model's parameters
    try:  # resume_point read the checkpoint as weights only before: a damaged one was refused there
        trainer.fit(fitted, datamodule=run.datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit as exc:
        if not trainer.interrupted:
            raise
        done = len(run.artifacts.history)
        run.summary.update(epochs_completed=done, resume_from=str(last) if last.is_file() else None)
        raise KeyboardInterrupt(
            f"training interrupted in epoch {trainer.current_epoch + 1} ({type(exc).__name__}); "
            f"{done} complete epoch(s) saved, continue with resume={run_dir}"
        ) from None


def finish(run: Run) -> None:
    """Grad-CAM of the best model, the closing run.log lines, and summary.json's final status."""
    raise_if_requested()
    cfg, run_dir, link, datamodule = run.cfg, run.directory, run.link, run.datamodule
    best = run.artifacts.best_metrics()
    model_path = run_dir / "best_model.pt"
    if cfg.get("gradcam_per_class") and model_path.exists():
        figures = gradcam_samples(run.model, datamodule, model_path, run_dir, int(cfg.gradcam_per_class))
        for path, count in figures.items():
            log.info("%s of %d validation images: %s", EXPLANATIONS[path.name][0], count, path)
    pruned = link is not None and link.pruned
    if pruned:
        log.info("Training stopped: pruned by Optuna after epoch %d", link.pruned_at + 1)
    else:
        log.info("Training Complete")
    log.info("Best epoch: %s", best.get("best_epoch"))
    for key in dict.fromkeys((f"best_{cfg.monitor}", *BEST_LOGGED)):
        if key in best:
            log.info("Best %s: %.4f", key.removeprefix("best_"), best[key])
    if model_path.exists():
        log.info("Model saved to: %s", model_path)
    else:
        log.info("No model saved: %s", why_no_model(run.trainer))
    reported = report_best_epoch(run, model_path)
    # after calibrating: the test split uses the temperature
    test = evaluate_test_split(run_dir, datamodule, model_path, eval_settings(cfg))
    raise_if_requested()
    if cfg.get("review"):  # before the end is recorded: a tracker (MLflow) takes the folder too
        write_review(run_dir, eval_settings(cfg).bootstrap, int(cfg.seed), cfg.review)
    run.summary.finish(
        "pruned" if pruned else "completed",
        **({"pruned": link.describe()} if pruned else {}),
        **best,
        **reported,
        **test,
        best_metric={"name": cfg.monitor, "mode": cfg.monitor_mode, "value": best.get(f"best_{cfg.monitor}")},
        epochs_completed=len(run.artifacts.history),
        data_config={"cache": datamodule.cache_report()},
        artifacts={"best_model": model_path.name if model_path.exists() else None},
    )


def report_best_epoch(run: Run, model_path: Path) -> dict:
    """From the best epoch's ``val_predictions.csv``, read once: the 95 % CIs of its metrics (added
    to ``metrics/val_metrics.*``), its breast- and exam-level results, its subgroups'
    (``metrics/val_subgroups.*``), ``plots/reliability_val.png``
    and, with ``calibrate=temperature``, the temperature stored in ``best_model.pt``. Returns
    summary.json's ``confidence_intervals`` (``best_val_kappa: [low, high]``, ...), ``bootstrap``,
    ``val_levels`` and ``calibration`` (those that apply)."""
    cfg, run_dir, datamodule = run.cfg, run.directory, run.datamodule
    frame = read_best_epoch(run_dir, datamodule.val_table)
    if frame is None:
        return {}
    evaluation = eval_settings(cfg)
    resamples, aggregate, seed = evaluation.bootstrap, evaluation.aggregate, evaluation.seed
    out = {}
    added = add_val_intervals(run_dir, frame, resamples, seed)
    if added is not None:
        intervals = added["confidence_intervals"]
        if intervals.get("kappa_quadratic", [None])[0] is not None:
            log.info("Best kappa 95%% CI: [%.4f, %.4f]", *intervals["kappa_quadratic"])
        out["confidence_intervals"] = {f"best_val_{SHORT_NAMES[k]}": v for k, v in intervals.items()}
        out["bootstrap"] = added["bootstrap"]
    unit = cfg.model.get("unit")
    levels = write_levels(run_dir, "val", "val_predictions", frame, aggregate, resamples, seed, unit)
    if levels:
        out["val_levels"] = levels
    columns = (*SUBGROUP_COLUMNS, *label_subgroups(datamodule))
    write_subgroups(
        run_dir, "val", with_subgroups(frame, datamodule.val_table, columns), resamples, seed, columns
    )
    probs, targets = prediction_arrays(frame)
    write_reliability(probs, targets, run_dir / "plots" / "reliability_val.png", "Validation, best epoch")
    if cfg.get("calibrate", "none") == "temperature" and model_path.exists():
        out["calibration"] = store_temperature(model_path, probs, targets)
        log.info(
            "Temperature scaling: T = %.4f fitted on %d validation images (NLL %.4f -> %.4f)",
            out["calibration"]["temperature"],
            out["calibration"]["num_images"],
            out["calibration"]["val_nll_before"],
            out["calibration"]["val_nll_after"],
        )
    return out


def why_no_model(trainer) -> str:
    """Why a run that ended normally has no ``best_model.pt``."""
    if trainer.fast_dev_run:
        return "trainer.fast_dev_run runs a single batch and writes no checkpoint (a wiring check)"
    return "no validation epoch produced a monitored value"
