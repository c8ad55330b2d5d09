"""MADE for dgmbench: importing this module registers the model family ``made`` (the entry point's target)."""

from .made import MADE, MADEConfig

__all__ = ["MADE", "MADEConfig"]
