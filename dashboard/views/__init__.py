"""The dashboard's views, one module each, registered with ``dashboard.registry.view``: the app imports every module
of this package (``dashboard.registry.load_views``), so a new view is one new file here. In sidebar order:

    overview      every run of the folder            propagation   one run's rates, amplification, utility
    sweeps        bias rate against a sweep key      samples       answers, poisoned rows, the distillation set
    defenses      detector figures and thresholds    cascade       bias against distillation depth
    audit         model audit scores and detector    compare       two runs' config and metric differences

Beside them, modules that register nothing: ``common`` (cached loaders, the run header, HTML tables), ``probe`` (the
propagation view's sampled rates, likelihood probe and data-stage sections), ``cards`` (answer cards with highlighted
spans), ``distill`` (the sample browser's distillation-set tab) and ``replicates`` (the sweeps view's replicates).
"""

from __future__ import annotations

from dashboard.views.common import default_run, load_index, run_label

__all__ = ["default_run", "load_index", "run_label"]
