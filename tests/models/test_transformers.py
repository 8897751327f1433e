"""Transformer backbones (timm's ViT family): built at the run's input size, square or not,
explained by Grad-CAM over their token map, exported to ONNX."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from mammo.evaluation.gradcam import gradcam
from mammo.models.backbones import create_backbone
from mammo.models.checkpoint import load_checkpoint
from tests.conftest import SMALL_DEMO, TINY, run_cli
from tests.models.test_backbones import fill_hub_cache, hub_cache  # noqa: F401 (a fixture)

VIT = ["model=classifier", "model.backbone=test_vit", "pretrained=false", "img_size=[96,64]"]


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory, demo_root):
    from mammo.train import main

    out = tmp_path_factory.mktemp("vit")
    args = [*TINY, *SMALL_DEMO, *VIT, "epochs=1", f"paths.output_dir={out}", f"paths.demo_dir={demo_root}"]
    assert run_cli(main, args) == 0
    return out / "mammo_test_vit_density" / "results_1"


def test_a_vit_trains_at_a_non_square_size_and_its_checkpoint_rebuilds_it(vit_run):
    summary = json.loads(
        (vit_run.parent.parent / vit_run.parent.name / vit_run.name / "summary.json").read_text()
    )
    assert summary["status"] == "completed" and vit_run.parent.name == "mammo_test_vit_density"
    model = load_checkpoint(vit_run / "best_model.pt").model
    assert tuple(model.backbone.patch_embed.img_size) == (96, 64)
    assert model(torch.rand(2, 1, 96, 64)).shape == (2, 4)


def test_grad_cam_of_a_vit_is_its_token_map_and_not_constant(vit_run):
    model = load_checkpoint(vit_run / "best_model.pt").model
    images = torch.rand(3, 1, 96, 64)
    maps = gradcam(model, images, torch.tensor([0, 1, 3]))
    assert maps.shape == (3, 96, 64)
    assert all(float(m.max() - m.min()) > 0.5 for m in maps)  # normalised, not flat
    assert "Grad-CAM map is constant" not in (vit_run / "run.log").read_text()


def test_a_vit_exports_to_onnx_with_its_probabilities(vit_run, tmp_path):
    pytest.importorskip("onnxruntime", reason="the ONNX export's check needs onnxruntime (in the lock)")
    from mammo.export import main

    assert (
        run_cli(main, [f"ckpt={vit_run / 'best_model.pt'}", "format=onnx", f"paths.output_dir={tmp_path}"])
        == 0
    )
    report = json.loads((tmp_path / "exports" / "results_1" / "export.json").read_text())
    assert report["max_abs_prob_diff"] < 1e-4


def test_imagenet_position_embeddings_are_resampled_to_the_run_size(hub_cache):  # noqa: F811
    _, _, source = fill_hub_cache(hub_cache, "test_vit")
    model = create_backbone("test_vit", pretrained=True, img_size=(96, 64))
    assert tuple(model.patch_embed.grid_size) == (6, 4) and model.pos_embed.shape[1] == 1 + 6 * 4
    assert source.pos_embed.shape != model.pos_embed.shape  # resampled from the default grid
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert timm.create_model("test_vit", num_classes=0).patch_embed.grid_size != (6, 4)


@pytest.mark.parametrize("backbone", ["test_vit2", "test_vit3", "test_convnext"])
def test_other_vit_variants_and_a_convnext_build_at_the_run_size_and_are_explained(backbone):
    """Register tokens and average pooling (timm's other test ViTs), and a ConvNeXt (a CNN: no
    input size of its own), at a non-square size."""
    from mammo.models.classifier import DensityClassifier

    model = DensityClassifier(arch="x", backbone=backbone, img_size=[96, 64])
    maps = gradcam(model, torch.rand(2, 1, 96, 64), torch.tensor([0, 2]))
    assert maps.shape == (2, 96, 64) and all(float(m.max() - m.min()) > 0.5 for m in maps)


def test_training_and_evaluation_draw_the_attention_rollout_of_a_vit(vit_run, tmp_path):
    from mammo.evaluate import main

    assert (vit_run / "plots" / "attention_rollout.png").is_file()
    assert "Attention rollout of 8 validation images" in (vit_run / "run.log").read_text()
    args = [f"ckpt={vit_run / 'best_model.pt'}", "split=val", f"paths.output_dir={tmp_path}"]
    assert run_cli(main, args) == 0
    evaluation = next(tmp_path.glob("evaluations/results_*"))
    assert {p.name for p in (evaluation / "plots").glob("*.png")} >= {
        "gradcam_samples.png",
        "attention_rollout.png",
    }


def test_rollout_multiplies_the_attention_each_block_computed():
    """The captured weights equal the softmax of q·k by hand, the model's output is unchanged by
    the capture, and timm's fused attention is switched back on after it."""
    from mammo.evaluation.attention import attention_rollout, captured_attention, rollout
    from mammo.models.classifier import DensityClassifier

    torch.manual_seed(0)
    model = DensityClassifier(arch="x", backbone="test_vit", img_size=[96, 64]).eval()
    backbone, images = model.backbone, torch.rand(2, 1, 96, 64)
    entering = []
    backbone.blocks[0].register_forward_pre_hook(lambda _m, args: entering.append(args[0]))
    with torch.no_grad():
        plain = backbone.forward_features(model.normalize(images))
        with captured_attention(backbone) as weights:
            captured = backbone.forward_features(model.normalize(images))
    attn = backbone.blocks[0].attn
    tokens = backbone.blocks[0].norm1(entering[0])
    q, k, _ = attn.qkv(tokens).reshape(2, tokens.shape[1], 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    by_hand = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)
    assert len(weights) == len(backbone.blocks) and all(b.attn.fused_attn for b in backbone.blocks)
    torch.testing.assert_close(weights[0], by_hand.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(captured, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rollout(weights).sum(-1), torch.ones(2, 1 + 6 * 4))  # rows: distributions
    maps = attention_rollout(model, images)
    assert maps.shape == (2, 96, 64) and all(float(m.max() - m.min()) > 0.5 for m in maps)


def test_a_swin_trains_at_a_non_square_size_and_grad_cam_reads_its_channels_last_map():
    """timm has no test-sized Swin: the smallest real one, at 128 x 96 (a 4 x 3 last stage)."""
    from mammo.evaluation.attention import has_attention
    from mammo.evaluation.gradcam import spatial_map
    from mammo.models.classifier import DensityClassifier

    model = DensityClassifier(arch="x", backbone="swin_tiny_patch4_window7_224", img_size=[128, 96])
    images = torch.rand(2, 1, 128, 96)
    features = model.backbone.forward_features(model.normalize(images))
    assert features.shape == (2, 4, 3, 768) and spatial_map(features, model.backbone).shape == (2, 768, 4, 3)
    assert not has_attention(model.backbone)  # windowed attention: Grad-CAM only
    loss = torch.nn.functional.cross_entropy(model(images), torch.tensor([0, 3]))
    loss.backward()
    assert model.backbone.patch_embed.proj.weight.grad is not None
    maps = gradcam(model, images, torch.tensor([0, 2]))
    assert maps.shape == (2, 128, 96) and all(float(m.max() - m.min()) > 0.5 for m in maps)
