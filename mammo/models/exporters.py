"""Export a checkpoint to TorchScript or ONNX, checked against the checkpoint (``python -m mammo.export``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from mammo.core.errors import ConfigError
from mammo.data.images import image_shape
from mammo.models.ensemble import EnsembleModel, load_predictor

FORMATS = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}


def export(
    ckpt, fmt: str, out: Path, batch_size: int = 4, tolerance: float = 1e-5, seed: int = 0, tta=None
) -> dict:
    """Export, reload, and compare probabilities with the checkpoint on a random sample batch.

    ``ckpt`` and ``tta`` as ``mammo.models.ensemble.load_predictor`` takes them: an ensemble is
    exported as one model that averages its members (and augmentations)."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    checkpoint = load_predictor(ckpt, tta)
    if checkpoint.routes_views:
        raise ConfigError(
            "export: the members were trained on different views and take each image by its view, "
            "which an exported model is not given; export each member"
        )
    model = checkpoint.model
    height, width = image_shape(checkpoint.preprocessing["img_size"])
    generator = torch.Generator().manual_seed(seed)
    inputs, names = sample_inputs(checkpoint, batch_size, height, width, generator)
    with torch.inference_mode():
        expected = model(*inputs).softmax(1)
    path = out / FORMATS[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        traced = torchscript(checkpoint, inputs)
        traced.save(str(path))
        with torch.inference_mode():
            got = torch.jit.load(str(path))(*inputs).softmax(1)
    else:
        got = torch.from_numpy(_onnx_roundtrip(model, inputs, names, path)).softmax(1)
    diff = float((got - expected).abs().max())
    if diff > tolerance:
        raise ConfigError(
            f"export: {fmt} probabilities differ from the checkpoint by {diff:.2e} (> {tolerance:g})"
        )
    return {
        "format": fmt,
        "file": path.name,
        "checkpoint": str(checkpoint.path),
        "inputs": {n: list(t.shape[1:]) for n, t in zip(names, inputs)},
        "output": "logits",
        "unit": checkpoint.unit,
        "class_labels": checkpoint.class_labels,
        "preprocessing": checkpoint.preprocessing,
        "max_abs_prob_diff": diff,
        "sample_batch": batch_size,
        **checkpoint.record(),
    }


def sample_inputs(checkpoint, batch_size: int, height: int, width: int, generator):
    """A random batch the exported model is checked on, and its inputs' names: images (and the
    fused embeddings); for a multi-view model ``batch_size`` units of two views, the last of one
    view, with the ``assignment`` ``[units, images]`` of images to units."""
    model = checkpoint.model
    if checkpoint.unit:
        units = torch.arange(batch_size).repeat_interleave(2)[:-1]
        images = torch.rand(len(units), 1, height, width, generator=generator)
        assignment = (units[None] == torch.arange(batch_size)[:, None]).float()
        return (images, assignment), ["image", "assignment"]
    inputs = (torch.rand(batch_size, 1, height, width, generator=generator),)
    if model.hparams.embeddings_fusion:
        inputs += (torch.randn(batch_size, int(model.hparams.embedding_dim), generator=generator),)
    return inputs, ["image", "embedding"][: len(inputs)]


def torchscript(checkpoint, inputs):
    """The checkpoint's model traced (Lightning's tracer); an ensemble as one traced module that
    averages its traced members."""
    members = checkpoint.members
    if members[0] is checkpoint:  # one checkpoint
        return checkpoint.model.to_torchscript(method="trace", example_inputs=inputs)
    traced = [m.model.to_torchscript(method="trace", example_inputs=inputs) for m in members]
    ensemble = EnsembleModel(traced, [m.temperature for m in members], checkpoint.tta)
    return torch.jit.trace(ensemble.eval(), inputs)


def _onnx_roundtrip(model, inputs, names: list[str], path: Path):
    try:  # optional: only format=onnx needs it
        import onnxruntime
    except ImportError as exc:
        raise ConfigError("format=onnx needs onnx and onnxruntime (pip install onnx onnxruntime)") from exc
    axes = {n: {0: "batch"} for n in [*names, "logits"]}
    if "assignment" in names:  # images to units: [units, images]; the logits are per unit
        axes = {"image": {0: "images"}, "assignment": {0: "units", 1: "images"}, "logits": {0: "units"}}
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
            dynamic_axes=axes,
            dynamo=False,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {n: t.numpy().astype(np.float32) for n, t in zip(names, inputs)})[0]
