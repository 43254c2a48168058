"""metrics.json, typed: a pydantic model per section (``base``, ``run``, ``rates``, ``probe``, ``defenses``), the
whole file as ``Metrics`` with its schema version (``metrics``), the reference page generated from the models
(``reference``) and the one place metrics.json and summary.txt are written (``writer``). Readers use
``read_metrics`` (lenient, any version); the writer uses ``check_metrics`` (strict). Part of the ground layer."""

from poison.ground.results.metrics import (LIST_SECTIONS, METRICS_SCHEMA_VERSION, Metrics, check_metrics,
                                           read_metrics)

__all__ = ["LIST_SECTIONS", "METRICS_SCHEMA_VERSION", "Metrics", "check_metrics", "read_metrics"]
