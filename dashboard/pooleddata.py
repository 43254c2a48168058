"""Tables of a replicated sweep's pooled figures beyond the pooled rates (sweep.json, written by poison.sweep; see
docs/evidence.md): the design (``replicate_design``: crossed or nested, what varies), what each pooling ``method``
means, the student / teacher ratio pooled over replicates (``replicate_amplification``), each model's probe shift
against its replicate's measured null (``probe_null``: the paired t test of shift - null over replicates) and the
brand-swap placebo contrast D (``brand_swap``: each replicate's D, the t interval and p over replicates).

Every reader takes sweep.json as parsed (a dict, or anything else: an older or hand-edited file), returns what it can
read and names the rest in a list of problems; a section an older sweep lacks reads as empty. Pure functions, no
Streamlit."""

from __future__ import annotations

from typing import Any

import pandas as pd

from dashboard import fmt
from dashboard.data import checked_num
from dashboard.sweepdata import method_label
from poison.ground.results.rundir import as_text

METHODS = {
    "variance_components": "variance components of a prompts × replicates table (crossed: every replicate answered "
                           "the same prompts), Satterthwaite's df, a t quantile",
    "replicate_t": "a t interval of the replicate means on R − 1 df (nested: each replicate its own prompts)",
    "prompt_floor": "replicates closer than their own prompt error (the same rate by chance): the variance kept at "
                    "the prompts' share, never a zero-width interval",
    "prompts_only": "one replicate: its own prompt interval (a single run's)",
    "summary_quadrature": "each replicate's prompt half-width and a t interval of the replicate values, in "
                          "quadrature (conservative: runs without per-prompt files)",
    "exact_bound": "all values 0 (or all 1): the exact Clopper–Pearson bound on the distinct prompts",
    "log_delta": "the ratio on the log scale (delta method), its variance pooled as above",
}
VARY = {"train_seed": "the training seed", "data_draw": "the data draw"}


def _section(sj: Any, key: str, problems: list[str]) -> list[tuple[int, dict]]:
    rows = sj.get(key) if isinstance(sj, dict) else None
    if rows is None:
        return []
    if not isinstance(rows, list):
        problems.append(f"{key} is not a list")
        return []
    out = []
    for i, r in enumerate(rows):
        if isinstance(r, dict):
            out.append((i, r))
        else:
            problems.append(f"{key}[{i}] is not an object (skipped)")
    return out


def _nums(v: Any, where: str, problems: list[str]) -> list[float | None]:
    if v is None:
        return []
    if not isinstance(v, list):
        problems.append(f"{where} is not a list")
        return []
    return [checked_num(x, f"{where}[{j}]", problems) for j, x in enumerate(v)]


def is_replicated(sj: Any) -> bool:
    """Whether sweep.json was written with replicate pooling (``replicate_design``): the replicate, not only the
    training seed, is the unit; older sweeps pooled over seeds."""
    return isinstance(sj, dict) and isinstance(sj.get("replicate_design"), dict)


def design_line(sj: Any, n: float | None = None) -> str:
    """'3 replicates per point, varying the training seed: crossed (every replicate answered the same prompts)'."""
    d = sj.get("replicate_design") if isinstance(sj, dict) else None
    if not isinstance(d, dict):
        return ""
    vary = [VARY.get(str(v), str(v)) for v in d.get("vary") or []] if isinstance(d.get("vary"), list) else []
    design = {"crossed": "crossed (every replicate answered the same prompts)",
              "nested": "nested (each replicate drew its own prompts)"}.get(str(d.get("design")), fmt.text(
                  d.get("design")))
    n = n if fmt.num(n) is not None else fmt.num(d.get("n"))
    many = f"{int(n)} replicates per point" if n is not None else "replicates"
    return f"{many}, varying {' and '.join(vary) or fmt.DASH}: {design}"


def method_text(methods: list[str]) -> str:
    """What the pooling methods present mean ('variance_components+exact_bound' names two parts)."""
    parts = list(dict.fromkeys(p for m in methods if m for p in str(m).split("+")))
    return "; ".join(f"{p}: {METHODS[p]}" for p in parts if p in METHODS)


def amplification_frame(sj: Any) -> tuple[pd.DataFrame, list[str]]:
    """``replicate_amplification``: per group, measure, student and split the pooled ratio [interval], each
    replicate's ratio, the method and n."""
    problems: list[str] = []
    rows = []
    for i, r in _section(sj, "replicate_amplification", problems):
        at = f"replicate_amplification[{i}]"
        rows.append({"group": as_text(r.get("group")) or "?", "measure": as_text(r.get("measure")) or "greedy",
                     "student": as_text(r.get("student")) or "?", "teacher": as_text(r.get("teacher")) or "teacher",
                     "split": as_text(r.get("split")) or "?", "method": as_text(r.get("method")) or "",
                     "design": as_text(r.get("design")) or "",
                     **{k: checked_num(r.get(k), f"{at}: {k}", problems)
                        for k in ("ratio", "ci_low", "ci_high", "n_replicates", "df")},
                     "per_replicate": _nums(r.get("per_replicate"), f"{at}: per_replicate", problems)})
    cols = ["group", "measure", "student", "teacher", "split", "method", "design", "ratio", "ci_low", "ci_high",
            "n_replicates", "df", "per_replicate"]
    return pd.DataFrame(rows, columns=cols), problems


def amplification_table(a: pd.DataFrame) -> list[dict[str, str]]:
    out = []
    for r in a.to_dict("records"):
        ratio = fmt.ratio_ci(r["ratio"], r["ci_low"], r["ci_high"])
        if fmt.num(r["ratio"]) is None:
            ratio = "undefined (teacher rate 0)"
        out.append({"group": r["group"], "ratio_of": f"{r['student']} / {r['teacher']}",
                    "measure": {"greedy": "greedy answer", "sampled": "sampled answers"}.get(r["measure"],
                                                                                          r["measure"]),
                    "split": r["split"], "pooled": ratio,
                    "each": ", ".join(f"r{j}: {fmt.ratio(v)}" for j, v in enumerate(r["per_replicate"])) or fmt.DASH,
                    "method": method_label(r["method"]), "n": fmt.integer(r["n_replicates"])})
    return out


def null_frame(sj: Any) -> tuple[pd.DataFrame, list[str]]:
    """``probe_null``: per group, model, split and wording each replicate's shift and null, the mean shift, the mean
    null with its SD over replicates, the excess (shift - null) with its t interval and the paired t test's p."""
    problems: list[str] = []
    rows = []
    for i, r in _section(sj, "probe_null", problems):
        at = f"probe_null[{i}]"
        rows.append({"group": as_text(r.get("group")) or "?", "model": as_text(r.get("model")) or "?",
                     "split": as_text(r.get("split")) or "?", "wording": as_text(r.get("wording")) or "?",
                     "test": as_text(r.get("test")) or "",
                     **{k: checked_num(r.get(k), f"{at}: {k}", problems)
                        for k in ("shift", "null_mean", "null_sd", "excess", "ci_low", "ci_high", "p_value",
                                  "n_replicates")},
                     "shifts": _nums(r.get("shifts"), f"{at}: shifts", problems),
                     "nulls": _nums(r.get("nulls"), f"{at}: nulls", problems)})
    cols = ["group", "model", "split", "wording", "test", "shift", "null_mean", "null_sd", "excess", "ci_low",
            "ci_high", "p_value", "n_replicates", "shifts", "nulls"]
    return pd.DataFrame(rows, columns=cols), problems


def _p(v: Any) -> str:
    return fmt.DASH if fmt.num(v) is None else f"{fmt.num(v):.3g}"


def null_table(n: pd.DataFrame) -> list[dict[str, str]]:
    out = []
    for r in n.to_dict("records"):
        pairs = [f"r{j}: {fmt.signed(s)} vs {fmt.signed(x)}" for j, (s, x) in enumerate(zip(r["shifts"], r["nulls"]))]
        out.append({"group": r["group"], "model": r["model"], "split": r["split"], "wording": r["wording"],
                    "shift": fmt.signed(r["shift"]),
                    "null": fmt.signed(r["null_mean"]) + (f" (SD {fmt.decimal(r['null_sd'])})"
                                                          if fmt.num(r["null_sd"]) is not None else ""),
                    "excess": fmt.shift_ci(r["excess"], r["ci_low"], r["ci_high"]), "p": _p(r["p_value"]),
                    "each": ", ".join(pairs) or fmt.DASH, "n": fmt.integer(r["n_replicates"])})
    return out


def brand_swap_frames(sj: Any) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """``brand_swap``: (pooled D per group, model, role, split and wording with its t interval, SD, p and n; each
    replicate's D), in the shape of sweepdata.replicate_frames (``pooled``, ``rate``) for the replicate chart."""
    problems: list[str] = []
    pooled, per = [], []
    for i, r in _section(sj, "brand_swap", problems):
        key = {"group": as_text(r.get("group")) or "?", "model": as_text(r.get("model")) or "?",
               "split": as_text(r.get("split")) or "?", "wording": as_text(r.get("wording")) or "?"}
        at = f"brand_swap[{i}] ({key['group']}, {key['model']}, {key['split']}, {key['wording']})"
        pooled.append({**key, "role": as_text(r.get("role")) or "", "test": as_text(r.get("test")) or "",
                       "pooled": checked_num(r.get("d"), f"{at}: d", problems),
                       **{k: checked_num(r.get(k), f"{at}: {k}", problems)
                          for k in ("ci_low", "ci_high", "sd", "p_value")},
                       "n": checked_num(r.get("n_replicates"), f"{at}: n_replicates", problems)})
        reps = r.get("per_replicate")
        if reps is not None and not isinstance(reps, list):
            problems.append(f"{at}: per_replicate is not a list")
            reps = []
        for j, p in enumerate(reps or []):
            if not isinstance(p, dict):
                problems.append(f"{at}: per_replicate[{j}] is not an object (skipped)")
                continue
            per.append({**key, "seed": as_text(p.get("replicate")) or str(j),
                        "rate": checked_num(p.get("d"), f"{at}: per_replicate[{j}].d", problems),
                        "n_prompts": checked_num(p.get("n_prompts"), f"{at}: per_replicate[{j}].n_prompts",
                                                 problems), "ci_low": None, "ci_high": None})
    p = pd.DataFrame(pooled, columns=["group", "model", "role", "split", "wording", "test", "pooled", "ci_low",
                                      "ci_high", "sd", "p_value", "n"])
    s = pd.DataFrame(per, columns=["group", "model", "split", "wording", "seed", "rate", "n_prompts", "ci_low",
                                   "ci_high"])
    for df, cols in ((p, ("pooled", "ci_low", "ci_high", "sd", "p_value", "n")), (s, ("rate", "n_prompts", "ci_low",
                                                                                        "ci_high"))):
        for c in cols:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return p, s, problems


def d_ci(d: Any, lo: Any, hi: Any) -> str:
    """'+0.052 [+0.031, +0.073]' (D is small: three decimals, as the sweep's summary writes it)."""
    if fmt.num(d) is None:
        return fmt.DASH
    if fmt.num(lo) is None or fmt.num(hi) is None:
        return fmt.signed(d, 3)
    return f"{fmt.signed(d, 3)} [{fmt.signed(lo, 3)}, {fmt.signed(hi, 3)}]"


def brand_swap_table(p: pd.DataFrame, s: pd.DataFrame) -> list[dict[str, str]]:
    out = []
    for r in p.to_dict("records"):
        mine = s[(s.group == r["group"]) & (s.model == r["model"]) & (s.split == r["split"])
                 & (s.wording == r["wording"])]
        out.append({"group": r["group"], "model": r["model"], "split": r["split"], "wording": r["wording"],
                    "d": d_ci(r["pooled"], r["ci_low"], r["ci_high"]),
                    "each": ", ".join(f"r{x}: {fmt.signed(v, 3)}" for x, v in zip(mine.seed, mine.rate)) or fmt.DASH,
                    "sd": fmt.decimal(r["sd"], 3), "p": _p(r["p_value"]), "n": fmt.integer(r["n"])})
    return out
