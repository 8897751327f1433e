"""Export a trained model: ``python -m mammo.export ckpt=<run>/best_model.pt format=torchscript|onnx``.

Writes ``outputs/exports/results_N/model.{torchscript.pt,onnx}`` and ``export.json`` (format,
input shape, class labels, preprocessing, and the largest probability difference between the
export and the checkpoint on a sample batch, which must stay under ``tolerance``). The exported
model takes ``[B, 1, H, W]`` preprocessed images in [0, 1] (plus ``[B, D]`` embeddings for a
fusion model) and returns logits; normalisation is inside it. Also ``summary.json``
(``experiment_type: model_export``) and ``run.log``; the work is ``mammo.models.exporters``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mammo import CONFIG_DIR, TRUSTED_TARGETS
from mammo.artifacts.rundir import register_resolvers
from mammo.core.errors import install_compact_errors
from mammo.core.targets import trusted_task

register_resolvers()
install_compact_errors()
log = logging.getLogger("mammo")


@hydra.main(config_path=CONFIG_DIR, config_name="export", execution_whitelist=TRUSTED_TARGETS)
@trusted_task(TRUSTED_TARGETS)
def main(cfg: DictConfig) -> None:
    from mammo.artifacts.closing import say_closing
    from mammo.artifacts.io import write_json  # here, not above: --help stays fast
    from mammo.artifacts.runlog import route_library_logs
    from mammo.artifacts.summary import run_recorded
    from mammo.models.exporters import FORMATS, export

    def body(out: Path, _) -> dict:
        route_library_logs()
        report = export(
            cfg.ckpt,
            cfg.format,
            out,
            int(cfg.batch_size),
            float(cfg.tolerance),
            int(cfg.seed),
            cfg.get("tta"),
        )
        write_json(out / "export.json", report)
        log.info(
            "Exported %s (max |Δp| = %.2e): %s",
            cfg.format,
            report["max_abs_prob_diff"],
            out / FORMATS[cfg.format],
        )
        return {
            "checkpoint": report["checkpoint"],
            "format": cfg.format,
            "artifacts": {"export": "export.json"},
        }

    out = Path(cfg.paths.run_dir)
    run_recorded("model_export", out, int(cfg.seed), body)
    model = out / FORMATS[cfg.format]
    check = f"python -c \"import onnxruntime; print(onnxruntime.InferenceSession('{model}').get_inputs())\""
    torchscript = f"python -c \"import torch; print(torch.jit.load('{model}'))\""
    say_closing("Exported model", model, (check if cfg.format == "onnx" else torchscript) + "  (load it)")


if __name__ == "__main__":
    main()
