"""Backbones (timm) and the density LightningModule."""
