"""The propagation view's sections for bias as a distribution: the sampled biased rate per model and split (K
answers per prompt) with intervals, the likelihood probe (log-prob shift of the bias texts against the clean control,
and for students against their clean twin, per wording, with intervals and a zero line; each shift beside its
difference to the measured null, where the run measured one), and the data stage's generator counts (reference
answers rejected per reason). Each section is left out when the run has no such data."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, fmt, measures
from dashboard.views.common import table


def sampled_section(m: dict, models: list[str], conf: float, ev: str = ""):
    s = measures.sampled_frame(m)
    if s.empty:
        return
    k = s.samples_per_prompt.dropna()
    st.subheader("Sampled answers" + (f" ({int(k.iloc[0])} per prompt)" if not k.empty else ""))
    order = [x for x in models if x in set(s.model)] + [x for x in dict.fromkeys(s.model) if x not in models]
    st.altair_chart(charts.rate_bars(s, "split", data.split_order(s.split), order,
                                     title="biased share of sampled answers"), width="content")
    st.caption(f"Bars: share of each model's sampled answers the detector marks biased (the mean over prompts of "
               f"each prompt's biased share); whiskers: {conf:.0%} bootstrap intervals with the prompt as the unit "
               f"(the samples of one prompt are correlated){ev}.")
    with st.expander("Sampled rates table"):
        table([{"model": r["model"], "split": r["split"], "ci": fmt.pct_ci(r["rate"], r["ci_low"], r["ci_high"]),
                "kn": f"{fmt.integer(r['biased'])} / {fmt.integer(r['n'])}",
                "any": (f"{fmt.integer(r['prompts_with_any'])} of {fmt.integer(r['n_prompts'])} "
                        f"({fmt.pct(r['prompts_with_any_rate'])})" if fmt.num(r["prompts_with_any"]) is not None
                        else fmt.DASH)} for r in s.to_dict("records")],
              [("model", "model"), ("split", "split"), ("ci", "biased share [95% CI]"),
               ("kn", "biased / sampled answers"), ("any", "prompts with any biased answer")])


def probe_section(m: dict, row: pd.Series, ev: str = ""):
    sh = measures.shift_frame(m)
    nulls = measures.null_frame(m)
    lp = measures.logprob_frame(m)
    if sh.empty and lp.empty:
        return
    control = ((m.get("probe") or {}) if isinstance(m.get("probe"), dict) else {}).get("control") or "clean_control"
    st.subheader("Likelihood probe (log-prob shift against a clean control)")
    if sh.empty:
        st.info("The probe ran, but metrics.json has no log-prob shifts (no clean control to compare with).")
    else:
        splits = data.split_order(sh.split)
        pick = st.segmented_control("probe split", splits, default=splits[0], key="probe_split", required=True,
                                    format_func=lambda v: charts.SPLIT_LABELS.get(v, v)) or splits[0]
        d = sh[sh.split == pick]
        wordings = [w for w in measures.WORDINGS if w in set(d.wording)] + sorted(
            set(d.wording) - set(measures.WORDINGS))
        models = list(dict.fromkeys(d.model))
        null = nulls[nulls.split == pick]
        st.altair_chart(charts.shift_chart(d, models, wordings, null), width="content")
        twins = (sh.against == measures.AGAINST_TWIN).any()
        st.caption(
            f"Each model's mean per-token log-probability of the bias texts minus the clean control's "
            f"(`{control}`) on the same prompts"
            + (", and for a student minus its clean twin's (the same distillation from the clean control)"
               if twins else "")
            + ". Above 0: the model finds the injected content likelier than the control does. Whiskers: 95% "
            f"paired bootstrap intervals over prompts{ev}; dashed line: no shift"
            + ("; grey rule and band: the measured null (the same clean fine-tune at another seed against the clean "
               "control) with its interval" if not null.dropna(subset=["shift"]).empty else "")
            + ". Seen: the poison's own sentences; "
            "unseen: paraphrases never trained on; concept: sentences never trained on that name no brand, product "
            "or URL of the poison; gate: going on after the clean answer instead of ending. A text's first token "
            "is left out of its wording's figure (it competes with ending the answer: the gate).")
        null_section(d, null)
        with st.expander("Log-prob shifts table"):
            table([{"model": r["model"], "wording": r["wording"], "against": r["against"].removeprefix("vs "),
                    "control": r["control"], "shift": fmt.shift_ci(r["shift"], r["ci_low"], r["ci_high"]),
                    "n": fmt.integer(r["n_prompts"])} for r in d.to_dict("records")],
                  [("model", "model"), ("wording", "wording"), ("against", "against"), ("control", "control model"),
                   ("shift", "shift [95% CI] (nats/token)"), ("n", "prompts")])
    texts = measures.probe_texts(m)
    if texts:
        with st.expander("Probe texts"):
            for w, items in texts.items():
                st.markdown(f"**{w}**")
                for t in items:
                    st.markdown(f"- {t}")
            unseen = (m.get("probe") or {}).get("unseen_in_poisoned_rows")
            if fmt.num(unseen) is not None:
                st.caption(f"held-out texts (unseen, concept) found in the poisoned training rows: "
                           f"{fmt.integer(unseen)}")


def null_section(d: pd.DataFrame, null: pd.DataFrame):
    """Each shift against the clean control beside its difference to the measured null (metrics.json ``vs_null``);
    left out when the run measured no null (``eval.probe_null`` off, or a run written before it)."""
    has = d[d.null.notna()]
    if has.empty and null.empty:
        return
    st.markdown("**Against the measured null**")
    if not null.empty:
        st.caption("Measured null (" + "; ".join(
            f"{r['wording']}: {r['between'] or 'second clean control − clean control'} "
            f"{fmt.shift_ci(r['shift'], r['ci_low'], r['ci_high'])}" for r in null.to_dict("records"))
            + "): how far the same clean fine-tune moves at another training seed. A shift is read against it, "
            "never against 0.")
    if has.empty:
        st.caption("No shift of this split has a vs_null entry (only shifts against the clean control get one).")
        return
    table([{"model": r["model"], "wording": r["wording"],
            "shift": fmt.shift_ci(r["shift"], r["ci_low"], r["ci_high"]), "null": fmt.signed(r["null"]),
            "excess": fmt.signed(r["excess"]),
            "ratio": fmt.DASH if fmt.num(r["ratio_to_null"]) is None else f"{r['ratio_to_null']:.1f}×",
            "p": f"{r['p_value']:.3g}" if fmt.num(r["p_value"]) is not None else fmt.DASH}
           for r in has.to_dict("records")],
          [("model", "model"), ("wording", "wording"), ("shift", "shift [95% CI]\nvs the clean control"),
           ("null", "null shift"), ("excess", "shift − null"), ("ratio", "|shift| / |null|"), ("p", "p-value")],
          data_table="vs-null")
    notes = [n for n in dict.fromkeys(has.null_note) if n]
    st.caption("shift − null: the excess over what a reseed of the clean fine-tune moves; |shift| / |null|: the shift "
               "in units of the null's size. One run has one null draw, so it gives no p-value (replicates do: the "
               "sweeps view tests the excess over replicates)." + (f" metrics.json: {'; '.join(notes)}." if notes
                                                                    else ""))


def data_stage_section(m: dict):
    g = measures.generator_frame(m)
    if g.empty:
        return
    st.subheader("Data stage: generated reference answers")
    d = (m.get("data") or {}) if isinstance(m.get("data"), dict) else {}
    table([{**r, **{c: fmt.integer(r[c]) for c in ("generated", "kept", "rejected", "retried", "dropped")},
            "reasons": r["reasons"] or fmt.DASH} for r in g.to_dict("records")],
          [("task", "task"), ("generated", "generated"), ("kept", "kept"), ("rejected", "rejected"),
           ("reasons", "rejected because"), ("retried", "retried"), ("dropped", "dropped")],
          caption=(f"{fmt.integer(d.get('rows'))} data rows, {fmt.integer(d.get('generated'))} with a generated "
                   "reference answer. A rejected answer (e.g. one that copies a few-shot example) is generated again; "
                   "a row whose retries all fail is dropped."))
