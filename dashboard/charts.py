"""Altair chart builders for the dashboard (pure: DataFrame in, chart out; no Streamlit)."""

from __future__ import annotations

import altair as alt
import pandas as pd

ROLE_COLORS = {"baseline": "#8c8c8c", "teacher": "#e4572e", "student": "#2e86ab"}
SPLIT_LABELS = {"target": "target task", "other": "other trained tasks", "unseen": "unseen tasks"}
PCT = alt.Axis(format="%")


def _order(splits) -> list[str]:
    vals = list(dict.fromkeys(str(v) for v in splits))
    return [s for s in SPLIT_LABELS if s in vals] + sorted(v for v in vals if v not in SPLIT_LABELS)


def _role_color(roles) -> alt.Color:
    present = [r for r in ROLE_COLORS if r in set(roles)]
    extra = sorted(set(roles) - set(present))
    domain = present + extra
    rng = [ROLE_COLORS.get(r, "#6a4c93") for r in domain]
    return alt.Color("role:N", scale=alt.Scale(domain=domain, range=rng), legend=alt.Legend(title="role"))


def rate_bars(df: pd.DataFrame, column: str, column_order: list[str], models: list[str],
              title: str = "biased-response rate") -> alt.FacetChart:
    """Bar per model with its interval, one panel per value of ``column`` (split or task)."""
    d = df.copy()
    d["label"] = [f"{r:.0%} ({int(k)}/{int(n)})" if pd.notna(r) and pd.notna(k) and pd.notna(n) else "n/a"
                  for r, k, n in zip(d.rate, d.biased, d.n)]
    d["panel"] = [SPLIT_LABELS.get(v, v) if column == "split" else v for v in d[column]]
    panels = [SPLIT_LABELS.get(v, v) if column == "split" else v for v in column_order]
    x = alt.X("model:N", sort=models, title=None, axis=alt.Axis(labelAngle=-30, labelLimit=160))
    tip = [alt.Tooltip("model:N"), alt.Tooltip(f"{column}:N"), alt.Tooltip("label:N", title="rate (k/n)"),
           alt.Tooltip("ci_low:Q", format=".1%", title="CI low"), alt.Tooltip("ci_high:Q", format=".1%",
                                                                                title="CI high")]
    bars = alt.Chart().mark_bar(opacity=0.85).encode(
        x=x, y=alt.Y("rate:Q", title=title, axis=PCT, scale=alt.Scale(domain=[0, 1])),
        color=_role_color(d.role), tooltip=tip)
    err = alt.Chart().mark_errorbar(ticks=True, thickness=1.5, color="#222").encode(
        x=x, y=alt.Y("ci_low:Q", title=title), y2="ci_high:Q", tooltip=tip)
    text = alt.Chart().mark_text(dy=-8, fontSize=11, color="#222").encode(
        x=x, y=alt.Y("ci_high:Q"), text="label:N")
    width = max(140, 62 * len(models))
    return alt.layer(bars, err, text, data=d).properties(width=width, height=260).facet(
        column=alt.Column("panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=13,
                                                                                 labelFontWeight="bold")))


def amplification_chart(amp: pd.DataFrame) -> alt.FacetChart:
    """Student/teacher ratio per student with its interval; the rule at 1 is 'no amplification'."""
    d = amp.copy()
    d["panel"] = [SPLIT_LABELS.get(s, s) for s in d.split]
    d["shown"] = ["undefined (teacher rate 0)" if pd.isna(r) else f"{r:.2f}" for r in d.ratio]
    tip = [alt.Tooltip("student:N"), alt.Tooltip("shown:N", title="ratio"), alt.Tooltip("ci_low:Q", format=".2f"),
           alt.Tooltip("ci_high:Q", format=".2f")]
    y = alt.Y("ratio:Q", title="student rate / teacher rate", scale=alt.Scale(type="symlog"))
    pt = alt.Chart().mark_point(filled=True, size=90, color="#2e86ab").encode(
        x=alt.X("student:N", title=None), y=y, tooltip=tip)
    err = alt.Chart().mark_errorbar(ticks=True, color="#2e86ab").encode(
        x=alt.X("student:N", title=None), y=alt.Y("ci_low:Q", title="student rate / teacher rate",
                                                  scale=alt.Scale(type="symlog")), y2="ci_high:Q", tooltip=tip)
    one = alt.Chart().mark_rule(strokeDash=[4, 3], color="#888").encode(y=alt.datum(1))
    panels = [SPLIT_LABELS.get(s, s) for s in _order(d.split)]
    return alt.layer(err, pt, one, data=d).properties(width=max(120, 80 * d.student.nunique()), height=200).facet(
        column=alt.Column("panel:N", title=None, sort=panels))


def sweep_chart(df: pd.DataFrame, x: str, x_title: str, quantitative: bool, color: str,
                splits: list[str]) -> alt.FacetChart:
    """Bias rate against a swept value: a line per series with its interval as a band, one panel per split."""
    d = df.rename(columns={x: "xval", color: "series"}).copy()
    d["panel"] = [SPLIT_LABELS.get(s, s) for s in d.split]
    if quantitative:
        d["xval"] = pd.to_numeric(d["xval"])
        xe = alt.X("xval:Q", title=x_title)
    else:
        d["xval"] = d["xval"].astype(str)
        xe = alt.X("xval:N", title=x_title, sort=None, axis=alt.Axis(labelAngle=0))
    if color == "role":
        roles = list(dict.fromkeys(d.series))
        domain = [r for r in ROLE_COLORS if r in roles] + sorted(r for r in roles if r not in ROLE_COLORS)
        ce = alt.Color("series:N", title="role", scale=alt.Scale(
            domain=domain, range=[ROLE_COLORS.get(r, "#6a4c93") for r in domain]))
    else:
        ce = alt.Color("series:N", title=color, scale=alt.Scale(scheme="tableau10"))
    tip = [alt.Tooltip("series:N", title=color), alt.Tooltip("xval", title=x_title),
           alt.Tooltip("rate:Q", format=".1%"), alt.Tooltip("ci_low:Q", format=".1%"),
           alt.Tooltip("ci_high:Q", format=".1%"), alt.Tooltip("biased:Q", title="k"), alt.Tooltip("n:Q"),
           alt.Tooltip("runs:Q")]
    band = alt.Chart().mark_area(opacity=0.18).encode(x=xe, y=alt.Y("ci_low:Q", title="biased-response rate",
                                                                    axis=PCT, scale=alt.Scale(domain=[0, 1])),
                                                      y2="ci_high:Q", color=ce)
    line = alt.Chart().mark_line(point=alt.OverlayMarkDef(size=60, filled=True)).encode(
        x=xe, y=alt.Y("rate:Q", title="biased-response rate", axis=PCT), color=ce, tooltip=tip)
    panels = [SPLIT_LABELS.get(s, s) for s in splits]
    return alt.layer(band, line, data=d).properties(width=300, height=240).facet(
        column=alt.Column("panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=13,
                                                                                 labelFontWeight="bold")))


def score_histogram(scores: pd.DataFrame, threshold: float) -> alt.LayerChart:
    d = scores.assign(kind=["poisoned" if p else "clean" for p in scores.poisoned])
    hist = alt.Chart(d).mark_bar(opacity=0.6, binSpacing=0).encode(
        x=alt.X("score:Q", bin=alt.Bin(maxbins=30), title="suspicion score (higher = more suspicious)"),
        y=alt.Y("count():Q", stack=None, title="samples"),
        color=alt.Color("kind:N", scale=alt.Scale(domain=["clean", "poisoned"], range=["#2e86ab", "#e4572e"]),
                        title=None))
    rule = alt.Chart(pd.DataFrame({"t": [threshold]})).mark_rule(color="#222", strokeDash=[5, 3], size=2).encode(
        x="t:Q", tooltip=alt.Tooltip("t:Q", title="threshold", format=".3f"))
    return alt.layer(hist, rule).properties(height=260, title="score distribution")


def roc_chart(roc: pd.DataFrame, fpr: float | None, tpr: float | None) -> alt.LayerChart:
    curve = alt.Chart(roc).mark_line(color="#e4572e").encode(
        x=alt.X("fpr:Q", title="false-positive rate", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("tpr:Q", title="true-positive rate", scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("threshold:Q", format=".3f"), alt.Tooltip("fpr:Q", format=".2f"),
                 alt.Tooltip("tpr:Q", format=".2f")])
    diag = alt.Chart(pd.DataFrame({"a": [0.0, 1.0]})).mark_line(color="#aaa", strokeDash=[4, 4]).encode(
        x="a:Q", y="a:Q")
    layers = [diag, curve]
    if fpr is not None and tpr is not None:
        layers.append(alt.Chart(pd.DataFrame({"fpr": [fpr], "tpr": [tpr]})).mark_point(
            size=140, filled=True, color="#222").encode(x="fpr:Q", y="tpr:Q"))
    return alt.layer(*layers).properties(height=260, title="ROC")


def compare_bars(deltas: pd.DataFrame, label_a: str, label_b: str, models: list[str],
                 splits: list[str]) -> alt.FacetChart:
    rows = []
    for r in deltas.to_dict("records"):
        for side, lab in (("a", label_a), ("b", label_b)):
            rows.append({"model": r["model"], "split": r["split"], "run": lab, "rate": r[f"rate_{side}"],
                         "ci_low": r[f"ci_low_{side}"], "ci_high": r[f"ci_high_{side}"]})
    d = pd.DataFrame(rows).dropna(subset=["rate"])
    d["panel"] = [SPLIT_LABELS.get(s, s) for s in d.split]
    x = alt.X("model:N", sort=models, title=None, axis=alt.Axis(labelAngle=-30))
    bars = alt.Chart().mark_bar(opacity=0.85).encode(
        x=x, xOffset="run:N", y=alt.Y("rate:Q", axis=PCT, scale=alt.Scale(domain=[0, 1]),
                                      title="biased-response rate"),
        color=alt.Color("run:N", title=None, scale=alt.Scale(range=["#8e7dbe", "#f2a541"])),
        tooltip=["run:N", "model:N", alt.Tooltip("rate:Q", format=".1%")])
    err = alt.Chart().mark_errorbar(ticks=True, color="#222").encode(
        x=x, xOffset="run:N", y=alt.Y("ci_low:Q", title="biased-response rate"), y2="ci_high:Q")
    return alt.layer(bars, err, data=d).properties(width=max(160, 80 * len(models)), height=240).facet(
        column=alt.Column("panel:N", sort=[SPLIT_LABELS.get(s, s) for s in splits], title=None))
