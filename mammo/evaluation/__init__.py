"""Evaluation: the density metrics, inference with a trained model, Grad-CAM, and the
aggregation of cross-validation folds."""
