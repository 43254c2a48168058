"""An out-of-tree defense: a package outside this repository's packages that registers itself through the
``cascade_poison.plugins`` entry-point group (a ``*.dist-info/entry_points.txt``, as pip installs it), found by name
after the registry re-reads the entry points, then run like a built-in."""

import sys

import numpy as np
import pytest

from defenses.base import run_defense
from poison.ground.core import registry
from tests.conftest import REPO
from tests.test_defenses import SAMPLES

FIXTURE = REPO / "tests" / "fixtures" / "oot_defense"


@pytest.fixture
def oot_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURE))  # also invalidates importlib's caches, so metadata sees the dist-info
    monkeypatch.setattr(registry, "_plugins", {k: dict(v) for k, v in registry._plugins.items()})
    monkeypatch.delitem(sys.modules, "oot_link_defense", raising=False)
    yield
    sys.modules.pop("oot_link_defense", None)
    registry.reset_for_tests()  # the next load_plugins() re-reads the entry points without the fixture package


def test_out_of_tree_defense_is_found_by_name_and_runs(oot_on_path):
    assert "oot_link_count" not in registry.names("defense")
    registry.reset_for_tests()
    registry.load_plugins()
    assert registry.load_errors() == []
    assert {"oot_link_count", "perplexity", "bias_classifier", "llm_autorater"} <= set(registry.names("defense"))
    info = registry.get("defense", "oot_link_count")
    assert info.module == "oot_link_defense" and str(FIXTURE) in sys.modules["oot_link_defense"].__file__
    run = run_defense("oot_link_count", SAMPLES, clean=SAMPLES[0::2], args={"weight": 2.0})
    # clean twins have no link, the ad twin has one (vitaboost-plus.com!), the phishing twin one (https://...)
    assert run.scores.tolist() == [0.0, 2.0, 0.0, 2.0] and run.scores.dtype == np.float64
    assert run.record == {"kind": "defense", "name": "oot_link_count", "args": {"weight": 2.0},
                          "module": "oot_link_defense"}
    with pytest.raises(registry.PluginError, match=r"weight: Input should be greater than 0"):
        run_defense("oot_link_count", SAMPLES, args={"weight": 0})
