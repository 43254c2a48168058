"""Bias types: what the adversary injects, how a poisoned response is written, and how a generation is checked."""

from poison.biases.base import BiasType, Detection

__all__ = ["BiasType", "Detection"]
