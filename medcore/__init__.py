"""medcore: nightly DenseNet121 X-ray classifier retraining, evaluation, Grad-CAM and reporting."""

__version__ = "0.1.0"
