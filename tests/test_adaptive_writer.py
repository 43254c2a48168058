"""The adaptive poison writer (poison.writer: adaptive): an attacker who knows the configured defenses keeps, per
poisoned row, the candidate they find least suspicious among those that still carry the bias, and the train-place
defense stage reports each defense's AUROC against it and against the poison the non-adaptive writer would have
written (the counterfactual), with the drop."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from poison.biases import targeted_ads  # noqa: F401  (registers the bias type)
from poison.config import ConfigError, load_config
from poison.ground.core import registry
from poison.runner import run_config
from poison.stages.adaptive import suspicion
from tests.conftest import TINY_CONFIG, dirs

ADAPTIVE = TINY_CONFIG.replace("  count: 6\n", "  count: 6\n  writer: adaptive\n  adaptive: {template_variants: 6, "
                               "llm_variants: 2}\n") + """
defense:
  defenses:
    - {type: bias_classifier, args: {builtin_clean: 40}, fpr: 0.25}
  places: [train]
  filter: none
"""


def test_suspicion_is_the_mid_rank_quantile_among_clean_scores():
    clean = np.array([0.0, 1.0, 2.0, 3.0])
    assert suspicion(np.array([-1.0, 1.0, 1.5, 9.0]), clean).tolist() == [0.0, 0.375, 0.5, 1.0]


def test_adaptive_writer_needs_a_known_defense(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(TINY_CONFIG.replace("  count: 6\n", "  count: 6\n  writer: adaptive\n"))
    with pytest.raises(ConfigError, match="poison.writer: adaptive evades the configured defenses"):
        load_config(str(p))
    p.write_text(ADAPTIVE.replace("llm_variants: 2}", "llm_variants: 2, defenses: [perplexity]}"))
    with pytest.raises(ConfigError, match="poison.adaptive.defenses: 'perplexity' is no configured defense"):
        load_config(str(p))


def test_adaptive_run_keeps_the_least_suspicious_biased_candidate(tmp_path, models_dir):
    cfg = tmp_path / "adaptive.yaml"
    cfg.write_text(ADAPTIVE)
    rd, m = run_config(str(cfg), dirs(tmp_path, models_dir)[1::2], quiet=True)
    a = m["poison"]["adaptive"]
    assert a["defenses"] == ["bias_classifier"] and a["llm_written"] == 12  # 6 rows x 2 rewrites
    train = pd.read_parquet(rd / "train_set.parquet")
    pois = train[train.poisoned.astype(bool)]
    assert len(pois) == 6 and pois.nonadaptive_response.notna().all()
    bias = registry.get("bias_type", "targeted_ads").build({}, "poison.bias.args")
    assert all(bias.detect(t).biased for t in pois.response)  # every kept candidate still carries the bias
    assert (pois.adaptive_suspicion <= pois.nonadaptive_suspicion).all()
    assert a["changed"] == int((pois.response != pois.nonadaptive_response).sum())
    assert a["suspicion_mean"]["adaptive"] == pytest.approx(pois.adaptive_suspicion.mean())
    assert a["suspicion_mean"]["adaptive"] <= a["suspicion_mean"]["nonadaptive"]

    # the defense's AUROC against the adaptive poison, against the counterfactual, and the drop
    rows = [r for r in m["defense_detection"] if r["place"] == "train" and r["scope"] == "all"]
    assert len(rows) == 1
    r = rows[0]
    scores = pd.read_parquet(rd / "defense_scores.parquet")
    assert r["auroc"] == pytest.approx(roc_auc_score(scores.poisoned, scores.score))
    stage = Path(json.loads((rd / "stages.json").read_text())["defense:train"]["path"])
    cf = pd.read_parquet(stage / "counterfactual.parquet")
    cf = cf[cf.split == "scored"].set_index("row_id").loc[scores.row_id.astype(str)]
    clean = ~scores.poisoned.astype(bool).to_numpy()
    np.testing.assert_allclose(cf.score.to_numpy()[clean], scores.score.to_numpy()[clean], rtol=1e-6)
    assert r["auroc_nonadaptive"] == pytest.approx(roc_auc_score(scores.poisoned, cf.score))
    assert r["auroc_drop"] == pytest.approx(r["auroc_nonadaptive"] - r["auroc"])
    assert r["auroc_drop_low"] <= r["auroc_drop"] <= r["auroc_drop_high"]
    summary = (rd / "summary.txt").read_text()
    assert "Adaptive writer: evades bias_classifier" in summary and "adaptive writer (knows the defenses)" in summary
