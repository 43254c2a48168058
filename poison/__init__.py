"""Cascading-poison testbed: inject biased samples into a teacher's instruction data, distil students, measure.

Run ``python -m poison.run CONFIG`` (or ``cascade-poison CONFIG``); see README.md. ``poison.load_run(run_dir)``
reads a run directory back: metrics.json typed (``poison.ground.results.Metrics``; docs/results-schema.md) and every
table as a pandas frame (``poison.ground.results.analysis.LoadedRun``).
"""

__version__ = "0.2.0"


def load_run(path):
    """A run directory read back for analysis (metrics, samples, training and distillation sets, defense scores)."""
    from poison.ground.results.analysis import load_run as _load_run

    return _load_run(path)
