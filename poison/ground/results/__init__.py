"""metrics.json, typed: a pydantic model per section (``base``, ``run``, ``rates``, ``probe``, ``defenses``), the
whole file as ``Metrics`` with its schema version (``metrics``), the reference page generated from the models
(``reference``), the one place metrics.json and summary.txt are written (``writer``), and the section registry
(``registry``): a section that is one file (``sections/``) brings its model, compute function and summary lines.
Readers use ``read_metrics`` (lenient, any version); the writer uses ``check_metrics`` (strict). The models' names
(``teacher``, ``control:gen2:student:sft``, ...) and the stage labels are typed in ``model_id`` (``ModelId``). Part of
the ground layer."""

from poison.ground.results import sections  # noqa: F401  (registers the sections that are one file each)
from poison.ground.results.metrics import (LIST_SECTIONS, METRICS_SCHEMA_VERSION, Metrics, check_metrics,
                                           read_metrics)
from poison.ground.results.registry import ReportInputs, register_section

__all__ = ["LIST_SECTIONS", "METRICS_SCHEMA_VERSION", "Metrics", "ReportInputs", "check_metrics", "read_metrics",
           "register_section"]
