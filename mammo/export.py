"""Export a trained model: ``python -m mammo.export ckpt=<run>/best_model.pt format=torchscript|onnx``.

Writes ``outputs/exports/results_N/model.{torchscript.pt,onnx}`` and ``export.json`` (format,
input shape, class labels, preprocessing, and the largest probability difference between the
export and the checkpoint on a sample batch, which must stay under ``tolerance``). The exported
model takes ``[B, 1, H, W]`` preprocessed images in [0, 1] (plus ``[B, D]`` embeddings for a
fusion model) and returns logits; normalisation is inside it.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mammo import CONFIG_DIR
from mammo.artifacts.rundir import register_resolvers
from mammo.artifacts.runlog import FILE_ONLY
from mammo.errors import ConfigError

register_resolvers()
log = logging.getLogger("mammo")
FORMATS = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from mammo.artifacts.io import write_json
    from mammo.artifacts.runlog import route_library_logs

    route_library_logs()
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        report = export(cfg.ckpt, cfg.format, out, int(cfg.batch_size), float(cfg.tolerance), int(cfg.seed))
    except BaseException as exc:
        log.error("Export failed: %s: %s", type(exc).__name__, exc)
        log.error(traceback.format_exc().rstrip(), extra=FILE_ONLY)
        raise
    write_json(out / "export.json", report)
    log.info(
        "Exported %s (max |Δp| = %.2e): %s",
        cfg.format,
        report["max_abs_prob_diff"],
        out / FORMATS[cfg.format],
    )


def export(
    ckpt: str, fmt: str, out: Path, batch_size: int = 4, tolerance: float = 1e-5, seed: int = 0
) -> dict:
    """Export, reload, and compare probabilities with the checkpoint on a random sample batch."""
    import torch

    from mammo.models.checkpoint import load_checkpoint

    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    checkpoint = load_checkpoint(ckpt)
    model = checkpoint.model
    size = int(checkpoint.preprocessing["img_size"])
    generator = torch.Generator().manual_seed(seed)
    inputs = (torch.rand(batch_size, 1, size, size, generator=generator),)
    if model.hparams.embeddings_fusion:
        inputs += (torch.randn(batch_size, int(model.hparams.embedding_dim), generator=generator),)
    with torch.inference_mode():
        expected = model(*inputs).softmax(1)
    path = out / FORMATS[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        traced = model.to_torchscript(method="trace", example_inputs=inputs)  # Lightning's tracer
        traced.save(str(path))
        with torch.inference_mode():
            got = torch.jit.load(str(path))(*inputs).softmax(1)
    else:
        got = torch.from_numpy(_onnx_roundtrip(model, inputs, path)).softmax(1)
    diff = float((got - expected).abs().max())
    if diff > tolerance:
        raise ConfigError(
            f"export: {fmt} probabilities differ from the checkpoint by {diff:.2e} (> {tolerance:g})"
        )
    names = ["image", "embedding"][: len(inputs)]
    return {
        "format": fmt,
        "file": path.name,
        "checkpoint": str(checkpoint.path),
        "inputs": {n: list(t.shape[1:]) for n, t in zip(names, inputs)},
        "output": "logits",
        "class_labels": checkpoint.class_labels,
        "preprocessing": checkpoint.preprocessing,
        "max_abs_prob_diff": diff,
        "sample_batch": batch_size,
    }


def _onnx_roundtrip(model, inputs, path: Path):
    import warnings

    import numpy as np
    import torch

    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError("format=onnx needs onnx and onnxruntime (pip install onnx onnxruntime)") from exc
    names = ["image", "embedding"][: len(inputs)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # the TorchScript-based exporter: no onnxscript needed
        torch.onnx.export(
            model,
            inputs,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={n: {0: "batch"} for n in [*names, "logits"]},
            dynamo=False,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {n: t.numpy().astype(np.float32) for n, t in zip(names, inputs)})[0]


if __name__ == "__main__":
    main()
