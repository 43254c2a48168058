"""Altair charts of one run (pure: DataFrame in, chart out; no Streamlit): biased rates per model with intervals, the
amplification on a log axis (rule and tick at 1, an undefined ratio written as text instead of drawn), the likelihood
probe's log-prob shifts with intervals and a zero line, two runs side by side, a defense's scores and ROC, the bias
against cascade depth (lines with interval bands) and the model audit's scores per model. Every chart renders as SVG
(its axis text is in the page's DOM)."""

from __future__ import annotations

import math

import altair as alt
import pandas as pd

from dashboard import fmt

ROLE_COLORS = {"baseline": "#8c8c8c", "control": "#6b9e78", "teacher": "#e4572e", "student": "#2e86ab"}
SPLIT_LABELS = {"target": "target task", "other": "other trained tasks", "unseen": "unseen tasks"}
MEASURE_COLORS = {"greedy answer": "#2e86ab", "sampled answers": "#8e5ea2"}
AGAINST_COLORS = {"vs the clean control": "#e4572e", "vs its clean twin": "#2e86ab"}
PCT = alt.Axis(format="%")
WIDTH = 780  # the panels of a chart together: with its axis and legend it fits beside the sidebar at 1400 px


def svg(chart):
    """Render with Vega's SVG renderer (Streamlit reads usermeta.embedOptions)."""
    return chart.properties(usermeta={"embedOptions": {"renderer": "svg"}})


def _order(splits) -> list[str]:
    vals = list(dict.fromkeys(str(v) for v in splits))
    return [s for s in SPLIT_LABELS if s in vals] + sorted(v for v in vals if v not in SPLIT_LABELS)


def role_color(roles, field: str = "role:N", title: str = "role") -> alt.Color:
    present = [r for r in ROLE_COLORS if r in set(roles)]
    domain = present + sorted(set(roles) - set(present))
    rng = [ROLE_COLORS.get(r, "#6a4c93") for r in domain]
    return alt.Color(field, scale=alt.Scale(domain=domain, range=rng), legend=alt.Legend(title=title))


def rate_bars(df: pd.DataFrame, column: str, column_order: list[str], models: list[str],
              title: str = "biased-response rate") -> alt.FacetChart:
    """Bar per model with its interval, one panel per value of ``column`` (split or task)."""
    d = df.copy()
    d["label"] = [f"{fmt.pct(r)} ({int(k)}/{int(n)})" if fmt.num(r) is not None and fmt.num(k) is not None
                  and fmt.num(n) else fmt.DASH for r, k, n in zip(d.rate, d.biased, d.n)]
    d["interval"] = [fmt.pct_ci(r, a, b) for r, a, b in zip(d.rate, d.ci_low, d.ci_high)]
    d["panel"] = [SPLIT_LABELS.get(v, v) if column == "split" else v for v in d[column]]
    panels = [SPLIT_LABELS.get(v, v) if column == "split" else v for v in column_order]
    x = alt.X("model:N", sort=models, title=None, axis=alt.Axis(labelAngle=-40, labelLimit=180, labelOverlap=False))
    tip = [alt.Tooltip("model:N"), alt.Tooltip(f"{column}:N"), alt.Tooltip("label:N", title="rate (k/n)"),
           alt.Tooltip("interval:N", title="rate [95% CI]")]
    bars = alt.Chart().mark_bar(opacity=0.85).encode(
        x=x, y=alt.Y("rate:Q", title=title, axis=PCT, scale=alt.Scale(domain=[0, 1])),
        color=role_color(d.role), tooltip=tip)
    err = alt.Chart().mark_errorbar(ticks=True, thickness=1.5, color="#222").encode(
        x=x, y=alt.Y("ci_low:Q", title=title), y2="ci_high:Q", tooltip=tip)
    n_panels = max(1, len(panels))
    width = max(140, min(72 * len(models), WIDTH // n_panels - 40))
    crowded = width / max(1, len(models)) < 64  # labels side by side would overlap: write them upwards
    text = alt.Chart().mark_text(fontSize=10, color="#222", angle=270 if crowded else 0,
                                 align="left" if crowded else "center", baseline="middle" if crowded else "bottom",
                                 yOffset=-4).encode(x=x, y=alt.Y("ci_high:Q"), text="label:N")
    return svg(alt.layer(bars, err, text, data=d).properties(width=width, height=240).facet(
        column=alt.Column("panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=13,
                                                                                 labelFontWeight="bold"))))


def log_domain(values) -> tuple[float, float]:
    """Powers of ten around the positive values and 1 (so that 1 is always on the axis)."""
    pos = [v for v in (fmt.num(x) for x in values) if v is not None and v > 0]
    lo, hi = min(pos + [1.0]) / 2, max(pos + [1.0]) * 2
    return 10.0 ** math.floor(math.log10(lo)), 10.0 ** math.ceil(math.log10(hi))


def amplification_chart(amp: pd.DataFrame) -> alt.FacetChart:
    """Student/teacher ratio per student with its interval on a log axis; the rule at 1 is 'no amplification'. A
    ratio of 0 sits on the axis floor, an unbounded upper limit reaches the top, and an undefined ratio (teacher rate
    0) is written as text, not drawn."""
    d = amp.copy()
    if "measure" not in d:
        d["measure"] = "greedy answer"
    shown = d[[fmt.num(r) is not None for r in d.ratio]]  # an undefined ratio's interval is not drawn
    lo, hi = log_domain(list(shown.ratio) + list(shown.ci_low) + list(shown.ci_high))
    def clip(v, dflt):
        return dflt if fmt.num(v) is None else min(max(float(v), lo), hi)
    d["y"] = [clip(r, None) if fmt.num(r) is not None else None for r in d.ratio]
    d["y_lo"] = [clip(v, lo) for v in d.ci_low]
    d["y_hi"] = [clip(v, hi) for v in d.ci_high]
    d["defined"] = [fmt.num(r) is not None for r in d.ratio]
    d["marker"] = ["below the axis (0)" if fmt.num(r) is not None and fmt.num(r) < lo else "ratio"
                   for r in d.ratio]
    d["shown"] = [fmt.ratio(r) if fmt.num(r) is not None else "undefined" for r in d.ratio]
    d["interval"] = [fmt.ratio_ci(r, a, b, undefined=True) + (" (teacher rate 0)" if fmt.num(r) is None else "")
                     for r, a, b in zip(d.ratio, d.ci_low, d.ci_high)]
    d["panel"] = [SPLIT_LABELS.get(s, s) for s in d.split]
    measures = list(dict.fromkeys(d.measure))
    color = alt.Color("measure:N", title="measured on", scale=alt.Scale(
        domain=measures, range=[MEASURE_COLORS.get(m, "#555") for m in measures]))
    x = alt.X("student:N", title=None, sort=list(dict.fromkeys(d.student)),
              axis=alt.Axis(labelAngle=-25, labelLimit=180, labelOverlap=False))
    ticks = [10.0 ** e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]
    ytitle = "student rate / teacher rate (log)"
    y = alt.Y("y:Q", title=ytitle, scale=alt.Scale(type="log", domain=[lo, hi], clamp=True),
              axis=alt.Axis(values=ticks, format="~g"))
    tip = [alt.Tooltip("student:N"), alt.Tooltip("measure:N"), alt.Tooltip("interval:N", title="ratio [95% CI]")]
    enc = {"x": x, "xOffset": alt.XOffset("measure:N", sort=measures), "color": color, "tooltip": tip}
    err = alt.Chart().transform_filter("datum.defined").mark_errorbar(ticks={"size": 12}, thickness=1.5).encode(
        y=alt.Y("y_lo:Q", title=ytitle, scale=alt.Scale(type="log", domain=[lo, hi], clamp=True)), y2="y_hi:Q",
        **enc)
    markers = [v for v in ("ratio", "below the axis (0)") if v in set(d.marker)]
    shape = alt.Shape("marker:N", title=None, scale=alt.Scale(domain=markers, range=[
        {"ratio": "circle", "below the axis (0)": "triangle-down"}[v] for v in markers]),
        legend=alt.Legend() if len(markers) > 1 or "ratio" not in markers else None)
    pt = alt.Chart().transform_filter("datum.defined").mark_point(filled=True, size=80, opacity=1).encode(
        y=y, shape=shape, **enc)
    label = alt.Chart().transform_filter("datum.defined").mark_text(dx=10, align="left", fontSize=10).encode(
        y=y, text="shown:N", **enc)
    panels = [SPLIT_LABELS.get(s, s) for s in _order(d.split)]
    n = d.student.nunique() * max(1, len(measures))
    width = max(160, min(70 * n, WIDTH // max(1, len(panels)) - 60))
    up = width / n < 90  # side by side the words would run into each other: write them upwards from the rule
    undefined = alt.Chart().transform_filter("!datum.defined").mark_text(
        angle=270 if up else 0, align="left" if up else "center", baseline="middle" if up else "bottom",
        yOffset=-6, fontSize=10, fontStyle="italic").encode(y=alt.datum(1.0), text="shown:N", **enc)
    one = alt.Chart().mark_rule(strokeDash=[4, 3], color="#666").encode(y=alt.datum(1.0))
    return svg(alt.layer(one, err, pt, label, undefined, data=d).properties(width=width, height=230).facet(
        column=alt.Column("panel:N", title=None, sort=panels, header=alt.Header(labelFontSize=13,
                                                                                 labelFontWeight="bold"))))


def shift_chart(shift: pd.DataFrame, models: list[str], wordings: list[str],
                nulls: pd.DataFrame | None = None) -> alt.FacetChart:
    """The likelihood probe: each model's log-prob shift against the clean control (and a student's against its clean
    twin) with its interval, one panel per wording; the zero line is 'no change'. ``nulls`` (split's rows of
    measures.null_frame): the measured null of each wording as a grey rule with its interval as a band."""
    d = shift.dropna(subset=["shift"]).copy().assign(kind="shift")
    d["interval"] = [fmt.shift_ci(s, a, b) for s, a, b in zip(d["shift"], d.ci_low, d.ci_high)]
    d["lo"] = [a if fmt.num(a) is not None else s for a, s in zip(d.ci_low, d["shift"])]
    d["hi"] = [b if fmt.num(b) is not None else s for b, s in zip(d.ci_high, d["shift"])]
    against = [a for a in AGAINST_COLORS if a in set(d.against)]
    color = alt.Color("against:N", title="log-prob shift", scale=alt.Scale(
        domain=against, range=[AGAINST_COLORS[a] for a in against]))
    y = alt.Y("model:N", sort=models, title=None, axis=alt.Axis(labelLimit=200))
    tip = [alt.Tooltip("model:N"), alt.Tooltip("wording:N"), alt.Tooltip("against:N"),
           alt.Tooltip("interval:N", title="shift [95% CI] (nats/token)"), alt.Tooltip("n_prompts:Q",
                                                                                       title="prompts")]
    enc = {"y": y, "yOffset": alt.YOffset("against:N", sort=against), "color": color, "tooltip": tip}
    xt = "log-prob shift (nats/token)"
    is_shift = "datum.kind == 'shift'"
    err = alt.Chart().transform_filter(is_shift).mark_errorbar(ticks=True, thickness=1.5).encode(
        x=alt.X("lo:Q", title=xt), x2="hi:Q", **enc)
    pt = alt.Chart().transform_filter(is_shift).mark_point(filled=True, size=60, opacity=1).encode(
        x=alt.X("shift:Q", title=xt), **enc)
    zero = alt.Chart().mark_rule(color="#444", strokeDash=[4, 3]).encode(x=alt.datum(0))
    layers = [zero]
    n = nulls.dropna(subset=["shift"]) if nulls is not None else pd.DataFrame()
    n = n[n.wording.isin(set(d.wording))] if not n.empty else n
    if not n.empty:
        n = n.assign(kind="null", model=None, against=None, interval=[
            fmt.shift_ci(s, a, b) for s, a, b in zip(n["shift"], n.ci_low, n.ci_high)],
            lo=[a if fmt.num(a) is not None else s for a, s in zip(n.ci_low, n["shift"])],
            hi=[b if fmt.num(b) is not None else s for b, s in zip(n.ci_high, n["shift"])])
        d = pd.concat([d, n[[c for c in n.columns if c in d.columns or c in ("between",)]]], ignore_index=True)
        ntip = [alt.Tooltip("wording:N"), alt.Tooltip("between:N", title="measured null"),
                alt.Tooltip("interval:N", title="null shift [95% CI] (nats/token)")]
        layers += [alt.Chart().transform_filter("datum.kind == 'null'").mark_rect(color="#9a9a9a", opacity=0.18)
                   .encode(x=alt.X("lo:Q", title=xt), x2="hi:Q", tooltip=ntip),
                   alt.Chart().transform_filter("datum.kind == 'null'").mark_rule(color="#7a7a7a", strokeWidth=2)
                   .encode(x=alt.X("shift:Q", title=xt), tooltip=ntip)]
    labels = {w: w for w in wordings}
    labels.update({"seen": "seen wording", "unseen": "unseen wording", "concept": "concept wording",
                   "gate": "gate (going on)"})
    d["panel"] = [labels.get(w, w) for w in d.wording]
    panels = [labels.get(w, w) for w in wordings]
    width = max(160, WIDTH // max(1, len(panels)) - 110)
    return svg(alt.layer(*layers, err, pt, data=d).properties(
        width=width, height=max(80, 18 * len(models) * max(1, len(against)))).facet(
        column=alt.Column("panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=13,
                                                                                 labelFontWeight="bold")))
        .resolve_scale(x="independent"))


def score_histogram(scores: pd.DataFrame, threshold: float) -> alt.LayerChart:
    d = scores.assign(kind=["poisoned" if p else "clean" for p in scores.poisoned])
    hist = alt.Chart(d).mark_bar(opacity=0.6, binSpacing=0).encode(
        x=alt.X("score:Q", bin=alt.Bin(maxbins=30), title="suspicion score (higher = more suspicious)"),
        y=alt.Y("count():Q", stack=None, title="samples"),
        color=alt.Color("kind:N", scale=alt.Scale(domain=["clean", "poisoned"], range=["#2e86ab", "#e4572e"]),
                        title=None))
    rule = alt.Chart(pd.DataFrame({"t": [threshold]})).mark_rule(color="#222", strokeDash=[5, 3], size=2).encode(
        x="t:Q", tooltip=alt.Tooltip("t:Q", title="threshold", format=".3f"))
    return svg(alt.layer(hist, rule).properties(height=260, title="score distribution"))


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
    return svg(alt.layer(*layers).properties(height=260, title="ROC"))


def compare_bars(deltas: pd.DataFrame, label_a: str, label_b: str, models: list[str],
                 splits: list[str]) -> alt.FacetChart:
    rows = []
    for r in deltas.to_dict("records"):
        for side, lab in (("a", label_a), ("b", label_b)):
            rows.append({"model": r["model"], "split": r["split"], "run": lab, "rate": r[f"rate_{side}"],
                         "ci_low": r[f"ci_low_{side}"], "ci_high": r[f"ci_high_{side}"]})
    d = pd.DataFrame(rows).dropna(subset=["rate"])
    d["panel"] = [SPLIT_LABELS.get(s, s) for s in d.split]
    d["interval"] = [fmt.pct_ci(r, a, b) for r, a, b in zip(d.rate, d.ci_low, d.ci_high)]
    x = alt.X("model:N", sort=models, title=None, axis=alt.Axis(labelAngle=-40, labelLimit=180, labelOverlap=False))
    bars = alt.Chart().mark_bar(opacity=0.85).encode(
        x=x, xOffset="run:N", y=alt.Y("rate:Q", axis=PCT, scale=alt.Scale(domain=[0, 1]),
                                      title="biased-response rate"),
        color=alt.Color("run:N", title=None, scale=alt.Scale(range=["#8e7dbe", "#f2a541"])),
        tooltip=["run:N", "model:N", alt.Tooltip("interval:N", title="rate [95% CI]")])
    err = alt.Chart().mark_errorbar(ticks=True, color="#222").encode(
        x=x, xOffset="run:N", y=alt.Y("ci_low:Q", title="biased-response rate"), y2="ci_high:Q")
    n_panels = max(1, len(splits))
    width = max(160, min(80 * len(models), WIDTH // n_panels - 70))
    return svg(alt.layer(bars, err, data=d).properties(width=width, height=240).facet(
        column=alt.Column("panel:N", sort=[SPLIT_LABELS.get(s, s) for s in splits], title=None)))


CASCADE_COLORS = {"greedy answer": "#2e86ab", "sampled answers": "#8e5ea2", "vs its clean twin": "#2e86ab",
                  "vs the clean control": "#e4572e"}


def cascade_chart(d: pd.DataFrame, splits: list[str], measure: str) -> alt.FacetChart:
    """The bias measure against generation depth (0 = the teacher), one line per series (greedy / sampled rate, or
    the shift against the clean twin / the clean control) with its interval as a band where recorded; one panel per
    split. ``d``: cascadedata.series."""
    d = d.copy()
    d["banded"] = [fmt.num(a) is not None and fmt.num(b) is not None for a, b in zip(d.lo, d.hi)]
    d["panel"] = [SPLIT_LABELS.get(s, s) for s in d.split]
    pct = measure == "rate"
    names = list(dict.fromkeys(d.series))
    color = alt.Color("series:N", title=None, scale=alt.Scale(
        domain=names, range=[CASCADE_COLORS.get(s, "#555") for s in names]))
    gens = sorted({int(g) for g in d.generation})
    x = alt.X("generation:Q", title="generation (0 = the teacher; k = distilled k times)",
              scale=alt.Scale(domain=[min(gens + [0]), max(gens + [1])], nice=False),
              axis=alt.Axis(values=gens, format="d", tickMinStep=1))
    title = "biased share of answers" if pct else "log-prob shift, seen wording (nats/token)"
    top = max([v for v in (fmt.num(x) for x in list(d.hi) + list(d.value)) if v is not None] + [0.05])
    yscale = alt.Scale(domain=[0, min(1.0, top * 1.1)]) if pct else alt.Scale(zero=True, nice=True)
    y = alt.Y("value:Q", title=title, scale=yscale, axis=PCT if pct else alt.Axis(format="+.2f"))
    tip = [alt.Tooltip("model:N"), alt.Tooltip("generation:Q"), alt.Tooltip("series:N"),
           alt.Tooltip("text:N", title="value [95% CI]")]
    layers = []
    if not pct:
        layers.append(alt.Chart().mark_rule(color="#444", strokeDash=[4, 3]).encode(y=alt.datum(0)))
    layers += [
        alt.Chart().transform_filter("datum.banded").mark_area(opacity=0.18).encode(
            x=x, y=alt.Y("lo:Q", title=title, scale=yscale), y2="hi:Q", color=color, detail="series:N"),
        alt.Chart().mark_line(strokeWidth=2).encode(x=x, y=y, color=color, detail="series:N"),
        alt.Chart().mark_point(filled=True, size=70, opacity=1).encode(x=x, y=y, color=color, tooltip=tip),
    ]
    panels = [SPLIT_LABELS.get(s, s) for s in splits]
    width = max(220, WIDTH // max(1, len(panels)) - 80)
    return svg(alt.layer(*layers, data=d).properties(width=width, height=250).facet(
        column=alt.Column("panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=13,
                                                                                 labelFontWeight="bold"))))


AUDIT_COLORS = {"poisoned": "#e4572e", "clean": "#2e86ab", "unlabelled": "#8c8c8c"}


def audit_bars(rows: pd.DataFrame, threshold: float | None) -> alt.LayerChart:
    """Each audited model's suspicion score as a bar (poisoned / clean / unlabelled by colour), highest first, with
    the threshold as a dashed rule (flag = score > threshold). ``rows``: auditdata rows (who, label, score, ...)."""
    d = rows.dropna(subset=["score"]).copy()
    d["hit_text"] = [fmt.text(h) if h is not None else fmt.DASH for h in d.hit]
    order = list(d.sort_values("score", ascending=False, kind="stable").who)
    labels = [k for k in AUDIT_COLORS if k in set(d.label)]
    color = alt.Color("label:N", title="model", scale=alt.Scale(domain=labels,
                                                                 range=[AUDIT_COLORS[k] for k in labels]))
    tip = [alt.Tooltip("who:N", title="model"), alt.Tooltip("label:N", title="is"),
           alt.Tooltip("score:Q", format=".2f"), alt.Tooltip("hit_text:N", title="injected content in top 10"),
           alt.Tooltip("top:N", title="top strings")]
    y = alt.Y("who:N", sort=order, title=None, axis=alt.Axis(labelLimit=260, labelOverlap=False))
    bars = alt.Chart(d).mark_bar(opacity=0.85).encode(
        x=alt.X("score:Q", title="suspicion score (higher = more suspicious)"), y=y, color=color, tooltip=tip)
    layers = [bars]
    if threshold is not None:
        layers.append(alt.Chart(pd.DataFrame({"t": [threshold]})).mark_rule(
            color="#222", strokeDash=[5, 3], size=2).encode(x="t:Q", tooltip=alt.Tooltip("t:Q", title="threshold",
                                                                                        format=".2f")))
    return svg(alt.layer(*layers).properties(width=WIDTH - 200, height=max(80, 24 * len(d) + 40)))
