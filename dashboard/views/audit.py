"""Model audit: each trained model audited against its public base without its training data (metrics.json
``audit`` / ``audit_detector``; for a sweep point also the pool of the sweep's models in sweep.json). The suspicion
score per model as a bar chart and a table (poisoned or clean, the strings it is biased towards, whether the injected
content is among them), and the audit as a detector: the recorded AUROC (with its interval where recorded) and hits,
and at a threshold (a slider) the poisoned and clean models it flags. A run without an audit gets one line saying so
and the runs that have one."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import auditdata, charts, fmt
from dashboard.registry import view
from dashboard.views.common import (
    _run_header,
    _show_problems,
    problems_line,
    run_state,
    runs_with,
    sweep_json,
    table,
)

MODEL_COLUMNS = [("point", "sweep point"), ("model", "model"), ("role", "role"), ("generation", "generation"),
                 ("label", "poisoned?"), ("score", "suspicion score"), ("flagged", "flagged at the threshold"),
                 ("hit", "injected content\nin its top 10"), ("top", "top strings (score)")]
DETECTOR_COLUMNS = [("audit", "audit"), ("n", "models"), ("n_poisoned", "poisoned models"),
                    ("auroc", "AUROC [95% CI]\nrecorded"), ("recomputed", "AUROC\nfrom the scores shown"),
                    ("hits", "poisoned models with the\ninjected content in top 10"), ("threshold", "threshold"),
                    ("tpr", "TPR"), ("fpr", "FPR")]


def sources(index: dict[str, Any], row: pd.Series, m: dict | None) -> dict[str, tuple[str, dict]]:
    """label -> (file, read_audit result) for the run's own audit and its sweep's pool, where present."""
    out = {}
    if isinstance(m, dict):
        out["run"] = (f"{row['run']}/metrics.json", auditdata.read_audit(m.get("audit"), m.get("audit_detector")))
    sweeps = index["sweeps"]
    if row["sweep"] and (sweeps.sweep == row["sweep"]).any():
        srow = sweeps[sweeps.sweep == row["sweep"]].iloc[0]
        sj, _ = sweep_json(srow["path"])  # a problem with it is among the sweep's problems in the sweeps view
        if isinstance(sj, dict):
            out["sweep"] = (f"{row['sweep']}/sweep.json",
                            auditdata.read_audit(sj.get("audit"), sj.get("audit_detector")))
    return {k: v for k, v in out.items() if v[1]["present"]}


@view("audit", title="Model audit", scope="run", order=70)
def view_audit(index: dict[str, Any], row: pd.Series):
    st.header("Model audit")
    m = run_state(row["path"])["metrics"]
    _run_header(row, m)
    if m is None:
        _show_problems(row)
    found = sources(index, row, m)
    if not found:
        st.info("No model audit in this run: " + ("its metrics.json has no audit section (runs with audit.audits "
                                                  "write one)." if m is not None else "no readable metrics.json."))
        runs_with(index, "has_audit", "audit", "a model audit", here=row["run"])
        return
    pick = next(iter(found))
    if len(found) > 1:
        pick = st.segmented_control(
            "models audited", list(found), default="sweep", key="au_source", required=True,
            format_func={"run": "this run's models", "sweep": "the sweep's pool of models"}.get) or "sweep"
    file, a = found[pick]
    audit_section(file, a, key=f"{row['run']}:{pick}")


def audit_section(file: str, a: dict[str, Any], key: str):
    problems_line(file, a["problems"])
    rows: pd.DataFrame = a["rows"]
    if rows.empty:
        st.info(f"The audit section of `{file}` has no readable rows.")
        return
    audits = list(dict.fromkeys(rows.audit))
    audit = audits[0]
    if len(audits) > 1:
        audit = st.selectbox("audit", audits, key=f"au_type:{key}")
    r = rows[rows.audit == audit]
    det = a["detector"][a["detector"].audit == audit]
    scored = r.dropna(subset=["score"])
    if scored.empty:
        st.info("No audited model of this audit has a numeric score.")
        return
    recorded = det.threshold.dropna() if not det.empty else pd.Series(dtype=float)
    default = float(recorded.iloc[0]) if not recorded.empty else auditdata.default_threshold(r)
    lo, hi = float(scored.score.min()), float(scored.score.max())
    if hi <= lo:
        hi = lo + 1.0
    step = (hi - lo) / 200
    lo -= step  # so that the lowest setting flags every model (flag = score > threshold)
    thr = st.slider("threshold (flag a model whose score > threshold)", lo, hi,
                    min(max(default if default is not None else (lo + hi) / 2, lo), hi), step=step, format="%.2f",
                    key=f"au_thr:{key}:{audit}")
    stats = auditdata.at_threshold(r, thr)
    c = st.columns(4)
    d0 = det.iloc[0] if not det.empty else None
    auc = d0["auroc"] if d0 is not None and fmt.num(d0["auroc"]) is not None else auditdata.auroc(r)
    ci = ""
    if d0 is not None and fmt.num(d0["auroc_lo"]) is not None and fmt.num(d0["auroc_hi"]) is not None:
        ci = f" [{d0['auroc_lo']:.2f}, {d0['auroc_hi']:.2f}]"
    c[0].metric("AUROC (poisoned vs clean models)", fmt.DASH if fmt.num(auc) is None else f"{auc:.3f}{ci}")
    c[1].metric("TPR (poisoned models flagged)", fmt.pct(stats["tpr"]))
    c[2].metric("FPR (clean models flagged)", fmt.pct(stats["fpr"]))
    c[3].metric("injected content in top 10", auditdata.hits_text(r))
    n_pos, n_neg = int(stats["n_poisoned"]), int(stats["n"] - stats["n_poisoned"])
    st.caption(f"At threshold {thr:.2f}: {stats['tp']} of {n_pos} poisoned and {stats['fp']} of {n_neg} clean models "
               f"flagged. " + ("The threshold starts at the one recorded with the audit." if not recorded.empty else
                               "The threshold starts at the highest clean model's score (no clean model flagged).")
               + ("" if fmt.num(auc) is not None else " AUROC needs poisoned and clean models both."))
    st.altair_chart(charts.audit_bars(r, thr), width="content")
    st.caption("Bars: each model's suspicion score, the audit's score of its top string (the summed log-ratio of the "
               "suspect to its public base where their next-token distributions depart most). Poisoned: the model "
               "descends from a teacher trained on poisoned rows; clean: a clean fine-tune, or teacher and students "
               "of a run that injected nothing. Dashed: the threshold.")
    table(auditdata.model_rows(r, thr),
          [col for col in MODEL_COLUMNS if col[0] != "point" or r.point.astype(bool).any()],
          data_table="audit-models", wrap=("top",), max_height=480)
    if not det.empty:
        st.subheader("The audit as a detector (recorded)")
        table(auditdata.detector_rows(det, r), DETECTOR_COLUMNS, data_table="audit-detector")
        st.caption("From the audit_detector section: AUROC of the model-level score for poisoned against clean "
                   "models, beside the AUROC of the scores above (they agree unless a row could not be read). "
                   "Threshold, TPR and FPR where the audit recorded an operating point.")
