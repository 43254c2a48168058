"""The rule detectors' and the judge's accuracy on the labelled set of real generations (evals/labelled.py), and the
correction of a measured biased rate for that error.

Accuracy. The set is a stratified draw (bias type x detector verdict x model kind x decoding) with a weight per row,
so every figure is a weighted (design-based) estimate: precision = weighted TP / (TP + FP), recall (sensitivity) =
weighted TP / (TP + FN), specificity = weighted TN / (TN + FP), over the answers the source runs produced. Intervals
are percentile intervals of a stratified Bayesian bootstrap: each stratum's 2x2 (verdict x label) shares are drawn
from a Dirichlet on its counts plus a Jeffreys half-count on each label beside every verdict the stratum holds (a
stratum whose drawn answers were all alike keeps its uncertainty), scaled by the stratum's size. Unweighted counts
are given beside them. The detector is rerun on each text with the bias arguments the row was written under; the
judge (the LLM judge, judge ``llm``, with the bias type's rubric) is run on the texts when asked.

Correction. A rate p observed through a detector of sensitivity Se and specificity Sp estimates
Se * pi + (1 - Sp) * (1 - pi); the Rogan-Gladen estimator inverts it, pi = (p + Sp - 1) / (Se + Sp - 1), clipped to
[0, 1]. Its interval combines the rate's own interval with the detector's measured uncertainty: the corrected lower
(upper) bound is the alpha/2 (1 - alpha/2) quantile, over bootstrap draws of (Se, Sp), of the corrected observed
lower (upper) bound.

Labellers. Where the set was labelled by two or more independent labellers, their agreement (Cohen's kappa and the
share of rows alike, over the drawn rows, unweighted) is reported per bias type: it bounds how far the set's own
labels can be trusted as the truth the detectors are measured against.

    python -m evals.accuracy [--set evals/data/real_generations.jsonl] [--judge] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from evals.labelled import LABELLED, labeller_columns, load

MIN_LABELLED = 30  # fewer labelled answers of a bias type: no correction


@lru_cache(maxsize=64)
def _detector(bias_type: str, args_json: str):
    from poison.ground.core import registry

    return registry.get("bias_type", bias_type).build(json.loads(args_json))


def rule_verdicts(df: pd.DataFrame) -> np.ndarray:
    return np.array([_detector(r.bias_type, r.bias_args).detect(r.text or "").biased for r in df.itertuples()])


def judge_verdicts(df: pd.DataFrame, **judge: Any) -> np.ndarray:
    """The LLM judge's (judge ``llm``) verdict on each text with its bias type's rubric (``judge``: its arguments,
    AutoraterConfig fields)."""
    from poison.ground.core import registry
    from poison.ground.engines.context import RunContext

    out = np.zeros(len(df), dtype=bool)
    # a standalone context: without base_url the judge starts a local vLLM server for its model
    autorater = registry.get("judge", "llm").build(judge, ctx=RunContext.standalone())
    for rubric, g in df.groupby("rubric", sort=False):
        v = autorater.judge_texts(list(g.text), rubric or None, list(g.prompt))
        out[df.index.get_indexer(g.index)] = [bool(x["biased"]) for x in v]
    return out


def _weighted(pred: np.ndarray, label: np.ndarray, w: np.ndarray) -> dict[str, Optional[float]]:
    tp, fp = float(w[pred & label].sum()), float(w[pred & ~label].sum())
    fn, tn = float(w[~pred & label].sum()), float(w[~pred & ~label].sum())
    div = lambda a, b: a / b if b > 0 else None  # noqa: E731
    return {"precision": div(tp, tp + fp), "recall": div(tp, tp + fn), "specificity": div(tn, tn + fp),
            "prevalence": div(tp + fn, tp + fp + fn + tn)}


def accuracy_of(pred: Sequence[bool], df: pd.DataFrame, confidence: float = 0.95, n_boot: int = 2000,
                seed: int = 0) -> dict[str, Any]:
    """Weighted precision, recall, specificity and prevalence of ``pred`` against ``df.label``, with stratified
    bootstrap intervals, and the unweighted counts."""
    pred = np.asarray(pred, dtype=bool)
    label = df.label.astype(bool).to_numpy()
    w = df.weight.astype(float).to_numpy()
    est = _weighted(pred, label, w)
    rng = np.random.default_rng(seed)
    # per stratum, its 2x2 (verdict x label) cells; a Jeffreys half-count on each label beside every verdict the
    # stratum holds, so a stratum whose drawn answers were all alike still carries its uncertainty
    cells, sizes = [], []
    for s in dict.fromkeys(df.stratum):
        m = df.stratum.to_numpy() == s
        c = np.array([[np.sum(m & (pred == p) & (label == lab)) for lab in (True, False)] for p in (True, False)],
                     dtype=float)
        seen = np.array([np.any(m & (pred == p)) for p in (True, False)])
        cells.append((c + 0.5 * seen[:, None]).ravel())
        sizes.append(float(w[m].sum()))
    draws: dict[str, list[float]] = {k: [] for k in est}
    for _ in range(n_boot):
        tot = sum(n * rng.dirichlet(np.where(c > 0, c, 1e-12)) * (c > 0) for c, n in zip(cells, sizes))
        tp, fp, fn, tn = tot  # the order the cells were raveled in: (verdict, label) = TT, TF, FT, FF
        for k, v in {"precision": tp / (tp + fp) if tp + fp > 0 else None,
                     "recall": tp / (tp + fn) if tp + fn > 0 else None,
                     "specificity": tn / (tn + fp) if tn + fp > 0 else None,
                     "prevalence": (tp + fn) / (tp + fn + fp + tn)}.items():
            if v is not None:
                draws[k].append(float(v))
    a = (1 - confidence) / 2
    out: dict[str, Any] = {"n": int(len(df)), "n_positive": int(label.sum()),
                           "tp": int((pred & label).sum()), "fp": int((pred & ~label).sum()),
                           "fn": int((~pred & label).sum()), "tn": int((~pred & ~label).sum())}
    for k, v in est.items():
        d = draws[k]
        out[k] = v
        ci = [float(np.quantile(d, a)), float(np.quantile(d, 1 - a))] if len(d) > n_boot // 2 else None
        if ci is not None and v is not None:
            # a figure at 0 or 1 keeps that bound (the half-counts pull the draws inward; Brown, Cai & DasGupta's
            # convention for the Jeffreys interval): an interval always holds its own point
            ci = [min(ci[0], v), max(ci[1], v)]
        out[f"{k}_ci"] = ci
    out["_draws"] = {k: draws[k] for k in ("recall", "specificity")}
    return out


def labelled_rows(path: str | Path = LABELLED) -> pd.DataFrame:
    df = load(path)
    if df.empty or "label" not in df:
        return df
    return df[df.label.notna()].reset_index(drop=True)


def accuracy_table(df: pd.DataFrame, judge: Optional[dict[str, Any]] = None, confidence: float = 0.95,
                   n_boot: int = 2000) -> list[dict[str, Any]]:
    """One row per bias type and scorer (rule, judge), over all answers and by decoding and by cut-off."""
    rows = []
    scorers = {"rule": rule_verdicts(df)}
    if judge is not None:
        scorers["judge"] = judge_verdicts(df, **judge)
    for name, pred in scorers.items():
        for bias_type, g in df.groupby("bias_type", sort=True):
            cuts = [("all", g.index)] + [(f"decoding={d}", h.index) for d, h in g.groupby("decoding")] + \
                   [(f"cut={c}", h.index) for c, h in g.groupby("cut")]
            for part, idx in cuts:
                acc = accuracy_of(pred[df.index.get_indexer(idx)], df.loc[idx], confidence, n_boot)
                acc.pop("_draws")
                rows.append({"bias_type": bias_type, "scorer": name, "part": part, **acc})
    return rows


@lru_cache(maxsize=16)
def _rule_accuracy(bias_type: str, path: str, n_boot: int) -> Optional[dict[str, Any]]:
    df = labelled_rows(path)
    if df.empty:
        return None
    g = df[df.bias_type == bias_type]
    if len(g) < MIN_LABELLED or g.label.astype(bool).sum() == 0:
        return None
    return accuracy_of(rule_verdicts(g), g, n_boot=n_boot)


def rule_accuracy(bias_type: str, path: str | Path = LABELLED, n_boot: int = 2000) -> Optional[dict[str, Any]]:
    """The bias type's rule detector on the labelled set, or None when the set has fewer than MIN_LABELLED labelled
    answers of that type (or no positive one)."""
    if not Path(path).exists():
        return None
    return _rule_accuracy(bias_type, str(path), n_boot)


def rogan_gladen(p: float, sensitivity: float, specificity: float) -> Optional[float]:
    j = sensitivity + specificity - 1
    if j <= 0:
        return None  # the detector is no better than chance: nothing to invert
    return float(min(1.0, max(0.0, (p + specificity - 1) / j)))


def corrected_rate(rate: float, ci_low: float, ci_high: float, acc: dict[str, Any],
                   confidence: float = 0.95) -> Optional[dict[str, Any]]:
    """A measured rate corrected for the detector's measured error (Rogan-Gladen), with an interval that carries the
    rate's interval and the detector's uncertainty; ``matters``: the corrected value lies outside the observed
    interval."""
    se, sp = acc.get("recall"), acc.get("specificity")
    if se is None or sp is None:
        return None
    point = rogan_gladen(rate, se, sp)
    if point is None:
        return None
    d = acc.get("_draws") or {}
    pairs = [(a, b) for a, b in zip(d.get("recall", []), d.get("specificity", [])) if a + b > 1]
    lows = [rogan_gladen(ci_low, a, b) for a, b in pairs] or [rogan_gladen(ci_low, se, sp)]
    highs = [rogan_gladen(ci_high, a, b) for a, b in pairs] or [rogan_gladen(ci_high, se, sp)]
    a = (1 - confidence) / 2
    lo, hi = float(np.quantile(lows, a)), float(np.quantile(highs, 1 - a))
    return {"rate": point, "ci_low": min(lo, point), "ci_high": max(hi, point), "sensitivity": se,
            "specificity": sp, "n_labelled": acc["n"], "matters": not (ci_low <= point <= ci_high),
            "method": "Rogan-Gladen with the detector's recall and specificity on the labelled real generations"}


def labeller_agreement(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per bias type (and ``all``), for each pair of labellers: rows both labelled, the share alike and Cohen's kappa
    (unweighted, over the drawn rows); empty with fewer than two labellers."""
    from itertools import combinations

    from sklearn.metrics import cohen_kappa_score

    cols = labeller_columns(df)
    out = []
    for x, y in combinations(cols, 2):
        for bias_type, g in [("all", df)] + list(df.groupby("bias_type", sort=True)):
            g = g[g[x].notna() & g[y].notna()]
            if g.empty:
                continue
            a, b = g[x].astype(bool).to_numpy(), g[y].astype(bool).to_numpy()
            kappa = float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) > 1 else None
            out.append({"bias_type": bias_type, "labellers": [x, y], "n": int(len(g)),
                        "agree": float(np.mean(a == b)), "kappa": kappa, "n_disagree": int(np.sum(a != b))})
    return out


def _fmt(x: Optional[float]) -> str:
    return "  -  " if x is None else f"{x:.2f}"


def report_lines(rows: list[dict[str, Any]]) -> list[str]:
    out = [f"{'bias type':<24} {'scorer':<6} {'part':<18} {'n':>4} {'pos':>4}  precision          recall"
           "             specificity"]
    for r in rows:
        cell = lambda k: f"{_fmt(r[k])} [{_fmt((r[k + '_ci'] or [None])[0])}, {_fmt((r[k + '_ci'] or [None, None])[1])}]"  # noqa: E731,E501
        out.append(f"{r['bias_type']:<24} {r['scorer']:<6} {r['part']:<18} {r['n']:>4} {r['n_positive']:>4}  "
                   f"{cell('precision')}  {cell('recall')}  {cell('specificity')}")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evals.accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--set", default=str(LABELLED))
    p.add_argument("--judge", nargs="?", const="{}", default=None,
                   help="also score the LLM judge (judge llm); optional JSON of its arguments")
    p.add_argument("--out", help="write the rows as JSON here")
    a = p.parse_args(argv)
    df = labelled_rows(a.set)
    if df.empty:
        raise SystemExit(f"error: {a.set}: no labelled rows")
    rows = accuracy_table(df, json.loads(a.judge) if a.judge is not None else None)
    print("\n".join(report_lines(rows)))
    agreement = labeller_agreement(load(a.set))
    for r in agreement:
        print(f"labellers {'/'.join(r['labellers'])} on {r['bias_type']}: {r['n']} rows, {r['agree']:.1%} alike, "
              f"kappa {_fmt(r['kappa'])}, {r['n_disagree']} disagree")
    if a.out:
        from poison.ground.core.io import atomic_write_json

        atomic_write_json(a.out, {"accuracy": rows, "labeller_agreement": agreement})


if __name__ == "__main__":
    main()
