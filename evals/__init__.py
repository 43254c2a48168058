"""Evaluation: generation backends (vLLM, HF generate, OpenAI-compatible endpoints), scorers and metrics."""
