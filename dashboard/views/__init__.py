"""The dashboard's views, one module each. Each takes the loaded index (and a selected run) and draws with Streamlit.

    overview      every run of the folder            propagation   one run's rates, amplification, utility
    sweeps        bias rate against a sweep key      samples       answers, poisoned rows, the distillation set
    defenses      detector figures and thresholds    compare       two runs' config and metric differences
    cascade       bias against distillation depth    audit         model audit scores and detector quality

Beside them: ``common`` (cached loaders, the run header, HTML tables), ``probe`` (the propagation view's sampled
rates, likelihood probe and data-stage sections), ``cards`` (answer cards with highlighted spans) and ``distill``
(the sample browser's distillation-set tab).
"""

from __future__ import annotations

from dashboard.views.audit import view_audit
from dashboard.views.cascade import view_cascade
from dashboard.views.common import default_run, load_index, run_label
from dashboard.views.compare import view_compare
from dashboard.views.defenses import view_defenses
from dashboard.views.overview import view_overview
from dashboard.views.propagation import view_propagation
from dashboard.views.samples import view_samples
from dashboard.views.sweeps import view_sweeps

VIEWS = {
    "overview": "Runs overview",
    "propagation": "Propagation",
    "sweeps": "Sweeps",
    "samples": "Sample browser",
    "defenses": "Defenses",
    "cascade": "Cascade depth",
    "audit": "Model audit",
    "compare": "Compare two runs",
}
RUN_VIEWS = ("propagation", "samples", "defenses", "cascade", "audit")

__all__ = ["RUN_VIEWS", "VIEWS", "default_run", "load_index", "run_label", "view_audit", "view_cascade",
           "view_compare", "view_defenses", "view_overview", "view_propagation", "view_samples", "view_sweeps"]
