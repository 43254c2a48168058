"""Altair charts of the sweeps view (pure: DataFrame in, chart out): a numeric swept key as points with interval bars
(no lines joining the points) and, where the sweep recorded one, the fitted dose-response curve over them; a
categorical key as grouped bars with intervals; replicates as the pooled value with its interval and each
replicate's value beside it (also the brand-swap contrast D). One panel per split; rendered as SVG."""

from __future__ import annotations

import altair as alt
import pandas as pd

from dashboard import fmt
from dashboard.charts import ROLE_COLORS, SPLIT_LABELS, WIDTH, svg
from poison.ground.results.model_id import ModelId

PALETTE = ["#e4572e", "#2e86ab", "#8e5ea2", "#f2a541", "#3b8b5a", "#c0392b", "#17becf", "#7f7f7f", "#bcbd22",
           "#8c564b"]


def _series_color(series: list[str], by: str) -> alt.Color:
    if by == "role":
        rng = [ROLE_COLORS.get(s, "#6a4c93") for s in series]
    else:
        def control(m: str) -> bool:  # a clean twin or the clean control
            mid = ModelId.try_parse(m)
            return mid is not None and (mid.is_twin or mid.role == "clean_control")
        fixed = {"teacher": ROLE_COLORS["teacher"], "baseline": ROLE_COLORS["baseline"],
                 "clean_control": ROLE_COLORS["control"]}
        free = iter([c for c in PALETTE if c not in fixed.values()])
        rng = [fixed.get(s) or (next(free, "#555") if not control(s) else "#9bbf9f") for s in series]
    return alt.Color("series:N", title=by, scale=alt.Scale(domain=series, range=rng))


def sweep_chart(points: pd.DataFrame, x: str, x_title: str, quantitative: bool, color: str, splits: list[str],
                measure: str, curve: pd.DataFrame | None = None, log_x: bool = False) -> alt.FacetChart:
    """``points``: x, ``color`` (the series), split, rate, ci_low, ci_high (+ biased, n, runs); ``curve``: series,
    split, dose, rate of the fitted dose-response (drawn as lines over the points, which are never joined)."""
    d = points.rename(columns={x: "xval", color: "series"}).copy()
    d["kind"] = "point"
    if quantitative:
        d["xval"] = pd.to_numeric(d["xval"])
    else:
        d["xval"] = d["xval"].astype(str)
    pct = measure != "logprob_shift"
    show = fmt.pct_ci if pct else fmt.shift_ci
    d["interval"] = [show(r, a, b) for r, a, b in zip(d.rate, d.ci_low, d.ci_high)]
    d["counts"] = [f"{fmt.integer(k)}/{fmt.integer(n)}" if fmt.num(k) is not None else fmt.integer(n)
                   for k, n in zip(d.get("biased", [None] * len(d)), d.get("n", [None] * len(d)))]
    if curve is not None and not curve.empty and quantitative:
        c = curve.rename(columns={"dose": "xval"}).assign(kind="fit")
        d = pd.concat([d, c[["xval", "series", "split", "rate", "kind"]]], ignore_index=True)
    d["panel"] = [SPLIT_LABELS.get(s, s) for s in d.split]
    series = list(dict.fromkeys(d.series))
    ce = _series_color(series, color)
    ytitle = {"greedy": "biased share of greedy answers", "sampled": "biased share of sampled answers"}.get(
        measure, "log-prob shift, seen wording (nats/token)")
    top = max([v for v in (fmt.num(x) for x in list(d.ci_high) + list(d.rate)) if v is not None] + [0.05])
    yscale = alt.Scale(domain=[0, min(1.0, top * 1.1)]) if pct else alt.Scale(zero=True, nice=True)
    yaxis = alt.Axis(format="%") if pct else alt.Axis(format="+.2f")
    tip = [alt.Tooltip("series:N", title=color), alt.Tooltip("xval", title=x_title),
           alt.Tooltip("interval:N", title="value [95% CI]"), alt.Tooltip("counts:N", title="k/n"),
           alt.Tooltip("runs:Q", title="runs")]
    layers = []
    if not pct:
        layers.append(alt.Chart().mark_rule(color="#444", strokeDash=[4, 3]).encode(y=alt.datum(0)))
    if quantitative:
        xe = alt.X("xval:Q", title=x_title, scale=alt.Scale(type="symlog") if log_x else alt.Scale(zero=True))
        if (d.kind == "fit").any():  # the fitted curve is the only line: the points are never joined
            layers.append(alt.Chart().transform_filter("datum.kind == 'fit'").mark_line(
                strokeWidth=2, opacity=0.75).encode(x=xe, y=alt.Y("rate:Q", title=ytitle, scale=yscale, axis=yaxis),
                                                    color=ce, detail="series:N"))
        layers += [
            alt.Chart().transform_filter("datum.kind == 'point'").mark_errorbar(ticks=True, thickness=1.5).encode(
                x=xe, y=alt.Y("ci_low:Q", title=ytitle, scale=yscale), y2="ci_high:Q", color=ce, tooltip=tip),
            alt.Chart().transform_filter("datum.kind == 'point'").mark_point(filled=True, size=70,
                                                                             opacity=1).encode(
                x=xe, y=alt.Y("rate:Q", title=ytitle, scale=yscale, axis=yaxis), color=ce, tooltip=tip),
        ]
    else:
        xe = alt.X("xval:N", title=x_title, sort=None, axis=alt.Axis(labelAngle=0))
        off = alt.XOffset("series:N", sort=series)
        layers += [
            alt.Chart().mark_bar(opacity=0.85).encode(
                x=xe, xOffset=off, y=alt.Y("rate:Q", title=ytitle, scale=yscale, axis=yaxis), color=ce,
                tooltip=tip),
            alt.Chart().mark_errorbar(ticks=True, color="#222").encode(
                x=xe, xOffset=off, y=alt.Y("ci_low:Q", title=ytitle, scale=yscale), y2="ci_high:Q", tooltip=tip),
        ]
    panels = [SPLIT_LABELS.get(s, s) for s in splits]
    width = max(220, WIDTH // max(1, len(panels)) - 80)
    return svg(alt.layer(*layers, data=d).properties(width=width, height=260).facet(
        column=alt.Column("panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=13,
                                                                                 labelFontWeight="bold"))))


def replicate_chart(pooled: pd.DataFrame, seeds: pd.DataFrame, splits: list[str], measure: str,
                    unit: str = "seed", ytitle: str | None = None) -> alt.FacetChart:
    """Replicates: per group (the sweep point without its replicate) and model the pooled value over the replicates
    (``unit``: seed for older sweeps) as a large point with its interval, and each replicate's own value as a small
    hollow point beside it (a strip, never joined); one panel per split. ``pooled``/``seeds``:
    sweepdata.replicate_frames (or pooleddata.brand_swap_frames, with its own ``ytitle``)."""
    pct = measure != "logprob_shift"
    show = fmt.pct_ci if pct else fmt.shift_ci
    pooled_kind, one_kind = f"pooled over {unit}s", f"one {unit}"
    p = pooled.dropna(subset=["pooled"]).rename(columns={"pooled": "value"}).assign(kind=pooled_kind)
    p["interval"] = [show(v, a, b) for v, a, b in zip(p.value, p.ci_low, p.ci_high)]
    p["seed"] = [f"{int(n)} {unit}s" if fmt.num(n) is not None else fmt.DASH for n in p.n]
    s = seeds.dropna(subset=["rate"]).rename(columns={"rate": "value"}).assign(kind=one_kind)
    s["interval"] = [show(v, a, b) for v, a, b in zip(s.value, s.ci_low, s.ci_high)]
    s["seed"] = [f"{unit} {x}" for x in s.seed]
    cols = ["group", "model", "split", "value", "ci_low", "ci_high", "interval", "seed", "kind"]
    d = pd.concat([p[cols], s[cols]], ignore_index=True)
    d["panel"] = [SPLIT_LABELS.get(x, x) for x in d.split]
    d["series"] = d.model  # the colour field of _series_color
    groups = list(dict.fromkeys(pooled.group))
    models = list(dict.fromkeys(pooled.model))
    ce = _series_color(models, "model")
    ytitle = ytitle or {"greedy": "biased share of greedy answers", "sampled": "biased share of sampled answers"}.get(
        measure, "log-prob shift, seen wording (nats/token)")
    top = max([v for v in (fmt.num(x) for x in list(d.ci_high) + list(d.value)) if v is not None] + [0.05])
    yscale = alt.Scale(domain=[0, min(1.0, top * 1.1)]) if pct else alt.Scale(zero=True, nice=True)
    yaxis = alt.Axis(format="%") if pct else alt.Axis(format="+.2f")
    x = alt.X("group:N", sort=groups, title=f"sweep point (without its {unit})", axis=alt.Axis(labelAngle=0))
    off = alt.XOffset("model:N", sort=models)
    tip = [alt.Tooltip("model:N"), alt.Tooltip("group:N", title="point"), alt.Tooltip("seed:N", title=unit),
           alt.Tooltip("interval:N", title="value [95% CI]")]
    enc = {"x": x, "xOffset": off, "color": ce, "tooltip": tip}
    layers = []
    if not pct:
        layers.append(alt.Chart().mark_rule(color="#444", strokeDash=[4, 3]).encode(y=alt.datum(0)))
    layers += [
        alt.Chart().transform_filter(f"datum.kind == '{pooled_kind}'").mark_errorbar(
            ticks=True, thickness=1.5).encode(y=alt.Y("ci_low:Q", title=ytitle, scale=yscale), y2="ci_high:Q", **enc),
        alt.Chart().transform_filter(f"datum.kind == '{pooled_kind}'").mark_point(
            filled=True, size=110, opacity=1).encode(y=alt.Y("value:Q", title=ytitle, scale=yscale, axis=yaxis),
                                                     **enc),
        alt.Chart().transform_filter(f"datum.kind == '{one_kind}'").mark_point(
            filled=False, size=40, opacity=0.9, strokeWidth=1.5).encode(
            y=alt.Y("value:Q", title=ytitle, scale=yscale, axis=yaxis), **enc),
    ]
    panels = [SPLIT_LABELS.get(x, x) for x in splits]
    width = max(220, WIDTH // max(1, len(panels)) - 80)
    return svg(alt.layer(*layers, data=d).properties(width=width, height=260).facet(
        column=alt.Column("panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=13,
                                                                                 labelFontWeight="bold"))))
