"""Imports every built-in bias type (the entry point of this package's bias-type plugins)."""

from poison.biases import insecure_code, misinformation, narrative, phishing, refusal, targeted_ads  # noqa: F401
