"""Every headline figure pooled over replicates, utility and the defenses' detector figures included: synthetic run
directories (samples.parquet and metrics.json in the format the report writes; no training). Utility is pooled per
model and task by variance components (a mean: never the proportions' exact bound), the defenses' AUROC and TPR by a
t interval over replicates (checked against scipy), one replicate gives no interval, and places, defenses and tasks
are never pooled together. The last test runs run_sweep's writing on such runs and reads sweep.json and summary.txt.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from poison.ground.core.io import atomic_write_parquet
from poison.ground.results.stats import mean_interval
from poison.replicate_defenses import METHOD, defense_lines, pool_defenses
from poison.replicates import per_prompt_values, pool_rows, replicate_lines
from poison.report import rate_rows
from poison.sweep import sweep_rows

SPLITS = {"math": "target", "csqa": "other", "trivia": "other"}  # two tasks share a split: keys stay apart
MODELS = {"teacher": {"role": "teacher"}, "student:sft": {"role": "student", "teacher": "teacher"}}
PROMPTS = {"math": [f"m{i}" for i in range(12)], "csqa": [f"c{i}" for i in range(10)],
           "trivia": [f"t{i}" for i in range(8)]}


def _samples(rng, replicate: int) -> pd.DataFrame:
    """Greedy rows with a biased verdict and a utility per prompt (math: ROUGE-L-like values in [0, 1]; csqa: exact
    match, every answer right; trivia: exact match 0/1), plus sampled rows whose utility must not count."""
    rows = []
    for model, spec in MODELS.items():
        shift = 0.1 * replicate + (0.05 if spec["role"] == "student" else 0.0)
        for task, ids in PROMPTS.items():
            for i in ids:
                u = {"math": float(np.clip(0.4 + shift + rng.normal(0, 0.15), 0, 1)), "csqa": 1.0,
                     "trivia": float(rng.random() < 0.5)}[task]
                base = {"id": i, "model": model, "role": spec["role"], "task": task, "split": SPLITS[task],
                        "utility": "rouge_l" if task == "math" else "exact_match"}
                rows.append({**base, "decoding": "greedy", "biased": bool(rng.random() < 0.3), "utility_value": u})
                rows.append({**base, "decoding": "sampled", "biased": bool(rng.random() < 0.3), "utility_value": 0.0})
    return pd.DataFrame(rows)


def _defenses(replicate: int) -> list[dict]:
    return [{"defense": "perplexity", "place": "train", "auroc": [0.71, 0.78, 0.74][replicate],
             "tpr_at_1pct_fpr": [0.10, 0.20, 0.15][replicate]},
            {"defense": "perplexity", "place": "distill", "auroc": [0.55, 0.60, 0.52][replicate],
             "tpr_at_1pct_fpr": None},
            {"defense": "ngram", "place": "train", "auroc": [0.90, 0.93, 0.88][replicate],
             "tpr_at_1pct_fpr": [0.5, 0.6, 0.4][replicate]}]


def _run(run_dir: Path, replicate: int) -> dict:
    """Write one replicate's samples.parquet and return its metrics.json content (the report's fields the sweep
    reads)."""
    s = _samples(np.random.default_rng(100 + replicate), replicate)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(run_dir / "samples.parquet", s)
    g = s[s.decoding == "greedy"]
    utility = []
    for (model, task, metric), x in g.groupby(["model", "task", "utility"], sort=False):
        v, lo, hi = mean_interval(x.utility_value.tolist())
        utility.append({"model": model, "task": task, "metric": metric, "value": v, "ci_low": lo, "ci_high": hi,
                        "n": len(x)})
    return {"run": {"splits": SPLITS, "seconds": 1.0}, "stages": {}, "poison": {"injected": 6, "rate": 0.1},
            "models": MODELS, "bias_rates": rate_rows(g, ["model", "role", "split"], 0.95), "utility": utility,
            "defenses": _defenses(replicate)}


def _pooled_utility(tmp_path: Path, crossed: bool = True, n: int = 3):
    rows, values, frames = [], {}, []
    for r in range(n):
        rd = tmp_path / f"r{r}"
        m = _run(rd, r)
        rows += sweep_rows({"poison.count": 6, "seeds": r}, m, rd)
        values[str(rd)] = per_prompt_values(rd, m)
        frames.append(pd.read_parquet(rd / "samples.parquet").assign(replicate=r))
    pooled = [p for p in pool_rows(rows, 0.95, values, crossed) if p["measure"] == "utility"]
    return pooled, pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------------- utility
def test_utility_is_pooled_per_model_and_task_with_its_method_and_sd(tmp_path):
    pooled, s = _pooled_utility(tmp_path)
    greedy = s[s.decoding == "greedy"]
    # one pooled figure per model and task: two tasks of one split (csqa, trivia) are never one figure
    assert sorted((p["model"], p["task"]) for p in pooled) == sorted((m, t) for m in MODELS for t in PROMPTS)
    for p in pooled:
        g = greedy[(greedy.model == p["model"]) & (greedy.task == p["task"])]
        per = g.groupby("replicate").utility_value.mean()  # the sampled rows' utility (all 0) never counts
        assert p["split"] == SPLITS[p["task"]] and p["metric"] == g.utility.iloc[0]
        assert p["method"] == "variance_components" and p["design"] == "crossed" and p["n"] == 3
        assert p["per_replicate"] == pytest.approx(per.tolist())
        assert p["pooled"] == pytest.approx(g.utility_value.mean())
        assert p["between_sd"] == pytest.approx(per.std(ddof=1))
        assert [x["rate"] for x in p["per_seed"]] == pytest.approx(per.tolist())
        assert p["ci_low"] <= p["pooled"] <= p["ci_high"]
    # utility is a mean, not a count of events: an all-1 exact-match task gets no exact (Clopper-Pearson) bound
    csqa = [p for p in pooled if p["task"] == "csqa"]
    assert all("exact_bound" not in p["method"] and p["ci_low"] == p["ci_high"] == 1.0 for p in csqa)
    # the spread between replicates (0.1 per replicate on math) widens the pooled interval beyond one replicate's
    math = next(p for p in pooled if p["task"] == "math" and p["model"] == "teacher")
    one = math["per_seed"][0]
    assert math["ci_high"] - math["ci_low"] > one["ci_high"] - one["ci_low"]
    lines = "\n".join(replicate_lines(pooled))
    assert "utility" in lines and "on trivia (exact_match)" in lines and "on math (rouge_l)" in lines


def test_utility_nested_and_single_replicate(tmp_path):
    nested, s = _pooled_utility(tmp_path / "nested", crossed=False)
    greedy = s[s.decoding == "greedy"]
    for p in nested:
        g = greedy[(greedy.model == p["model"]) & (greedy.task == p["task"])].groupby("replicate").utility_value
        m = np.array(p["per_replicate"])
        # the t over replicate means, its variance never below the replicates' own prompt error
        var = max(m.var(ddof=1) / m.size, float((g.var(ddof=1) / g.count()).sum()) / m.size ** 2)
        assert p["method"] == "replicate_t" + ("+prompt_floor" if var > m.var(ddof=1) / m.size else "")
        half = stats.t.ppf(0.975, m.size - 1) * np.sqrt(var)
        assert (p["ci_low"], p["ci_high"]) == pytest.approx((m.mean() - half, m.mean() + half))
    single, _ = _pooled_utility(tmp_path / "single", n=1)
    for p in single:  # one replicate: its own prompt interval, as metrics.json reported it
        assert p["method"] == "prompts_only" and p["between_sd"] is None
        assert (p["ci_low"], p["ci_high"]) == (p["per_seed"][0]["ci_low"], p["per_seed"][0]["ci_high"])


# --------------------------------------------------------------------------------------------------- defenses
def test_defense_auroc_of_three_replicates_pools_to_a_t_interval():
    rows = pool_defenses([("count=6", r, {"defenses": _defenses(r)}) for r in range(3)])
    by = {(r["defense"], r["place"], r["metric"]): r for r in rows}
    assert len(by) == len(rows) == 6  # defenses, places and metrics never mixed
    for (defense, place, metric), r in by.items():
        v = pd.Series([next(d for d in _defenses(i) if (d["defense"], d["place"]) == (defense, place))[metric]
                       for i in range(3)], dtype=float).dropna()
        assert [p["value"] for p in r["per_replicate"]] == pytest.approx(
            [None] * 3 if v.empty else v.tolist())
        if v.empty:  # an undefined figure in every replicate: nothing pooled
            assert r["n"] == 0 and r["mean"] is None and r["ci_low"] is None
            continue
        lo, hi = stats.t.interval(0.95, df=len(v) - 1, loc=v.mean(), scale=v.std(ddof=1) / np.sqrt(len(v)))
        assert r["mean"] == pytest.approx(v.mean()) and r["between_sd"] == pytest.approx(v.std(ddof=1))
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((max(0.0, lo), min(1.0, hi)))
        assert r["method"] == METHOD and r["df"] == 2 and r["n"] == 3 and not r["single_run"]
    # the distillation place's AUROC is its own figure, not averaged with the training set's
    assert by[("perplexity", "distill", "auroc")]["mean"] == pytest.approx(np.mean([0.55, 0.60, 0.52]))
    assert by[("perplexity", "train", "auroc")]["mean"] == pytest.approx(np.mean([0.71, 0.78, 0.74]))


def test_one_replicate_gives_no_interval_and_groups_stay_apart():
    rows = pool_defenses([("count=6", 0, {"defenses": _defenses(0)}),
                          ("count=12", 0, {"defenses": _defenses(1)}), ("count=12", 1, {"defenses": _defenses(2)})])
    single = [r for r in rows if r["group"] == "count=6" and r["metric"] == "auroc"]
    assert single and all(r["single_run"] and r["ci_low"] is None and r["method"] is None
                          and r["between_sd"] is None for r in single)
    two = next(r for r in rows if r["group"] == "count=12" and r["defense"] == "ngram" and r["metric"] == "auroc")
    assert two["n"] == 2 and two["mean"] == pytest.approx((0.93 + 0.88) / 2) and two["df"] == 1
    text = "\n".join(defense_lines(rows))
    assert "single run: no interval" in text and METHOD in text


def test_a_defense_listed_twice_is_two_figures():
    twice = [{"defense": "ngram", "place": "train", "auroc": 0.9}, {"defense": "ngram", "place": "train", "auroc": 0.6}]
    rows = pool_defenses([("g", r, {"defenses": twice}) for r in range(2)])
    assert sorted((r["instance"], r["mean"]) for r in rows) == [(0, pytest.approx(0.9)), (1, pytest.approx(0.6))]


# ------------------------------------------------------------------------------------------------ the sweep
def test_sweep_writes_pooled_utility_and_defenses(tmp_path, monkeypatch):
    """run_sweep on a replicated config whose runs are replaced by synthetic ones: sweep.json has utility rows in
    ``replicates`` and ``replicate_defenses``; the summary shows both."""
    import poison.sweep as sweep
    from tests.conftest import TINY_CONFIG

    raw = yaml.safe_load(TINY_CONFIG)
    raw["replicates"] = {"n": 3, "vary": ["train_seed"]}
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(raw))

    def fake_local(config, jobs, on_done, quiet):
        for i, job in enumerate(jobs):
            on_done(job, _run(Path(job.run_dir), i))

    monkeypatch.setattr(sweep, "run_local", fake_local)
    sweep_dir, rows = sweep.run_sweep(str(p), [f"runtime.runs_dir={tmp_path / 'runs'}"], quiet=True)
    sj = json.loads((sweep_dir / "sweep.json").read_text())
    util = [r for r in sj["replicates"] if r["measure"] == "utility"]
    assert len(util) == len(MODELS) * len(PROMPTS) and {r["method"] for r in util} == {"variance_components"}
    assert len(sj["replicate_defenses"]) == 6 and {r["n"] for r in sj["replicate_defenses"]} == {0, 3}
    text = (sweep_dir / "summary.txt").read_text()
    assert "defenses over replicates" in text and "on math (rouge_l)" in text
