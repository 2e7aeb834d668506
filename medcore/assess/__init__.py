"""Assessment of a trained model: evaluation, cross-validation, Grad-CAM, probes, the model card."""
