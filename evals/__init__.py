"""Evaluation plugins: scorers (the bias type's rule detector, clean-utility metrics) and the detector
precision/recall check of ``bench/bench_detectors.py``. Generation backends and statistics are in the ground layer
(``poison.ground.engines.generate``, ``poison.ground.results.stats``)."""
