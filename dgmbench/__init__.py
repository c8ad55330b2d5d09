"""dgmbench: a benchmark and reproducibility suite for deep generative models."""

__version__ = "0.1.0"
