"""Tables of the sweeps view: human axis titles for swept keys, which sweep opens first (a poison-budget sweep, the
newest), points per measure (greedy rate, sampled rate, log-prob shift; runs at one point pooled where that is
sound), the fitted dose-response curves and ED50s that sweep.json records (``dose_response``), evaluated with
``poison.ground.results.dose.predict``, and its replicates pooled (``replicates``; the other pooled sections are in
``dashboard.pooleddata``). Pure functions, no Streamlit."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from dashboard import fmt
from dashboard.data import checked_num, pool_rates
from poison.ground.results.dose import predict
from poison.ground.results.rundir import RUN_STAMP, as_number, as_text

DOSE_KEYS = ("poison.count", "poison.rate")
MEASURE_LABELS = {"greedy": "greedy answer", "sampled": "sampled answers", "logprob_shift": "log-prob shift"}
# which x choices of the view a dose-response entry (keyed by its swept dose key) can be drawn over
DOSE_X = {"poison.count": ("pt:poison.count", "poison_injected", "poison_requested"),
          "poison.rate": ("pt:poison.rate", "poison_rate")}
_TITLES = [
    (r"poison\.count", "poisoned training rows"),
    (r"poison\.rate", "poisoned share of the teacher's training set"),
    (r"poison_injected", "poisoned training rows (injected)"),
    (r"poison_requested", "poisoned training rows (requested)"),
    (r"poison_rate", "poisoned share of the teacher's training set"),
    (r"method", "distillation method (students)"),
    (r"students\.\d+\.method", "distillation method"),
    (r"students\.\d+\.model", "student model"),
    (r"students\.\d+\.train\.(\w+)", "student training {0}"),
    (r"teacher\.model", "teacher model"),
    (r"teacher\.train\.(\w+)", "teacher training {0}"),
    (r"(runtime\.)?seed", "seed"),
    (r"poison\.bias\.type", "bias type"),
    (r"poison\.mode", "poison mode"),
    (r"poison\.writer(\.\w+)*", "poison writer"),
    (r"eval\.samples_per_prompt", "sampled answers per prompt"),
    (r"data\.target_task", "target task"),
]


def axis_title(key: str) -> str:
    """A swept key (``pt:`` prefix or not) in a reader's words: 'poison.count' -> 'poisoned training rows'."""
    k = str(key).removeprefix("pt:")
    for pat, title in _TITLES:
        m = re.fullmatch(pat, k)
        if m:
            return title.format(*[fmt.words(g or "") for g in m.groups()])
    return fmt.words(k.replace(".", " "))


def is_dose_sweep(keys: list[str]) -> bool:
    return any(k in DOSE_KEYS for k in keys)


def sweep_order(sweeps: pd.DataFrame, keys_of) -> list[str]:
    """Sweep rels, poison-budget sweeps first, each group newest first (by the folder's time stamp)."""
    def stamp(rel: str) -> str:
        m = RUN_STAMP.search(str(rel).split("/")[-1])
        return m.group(1) if m else ""
    rels = sorted(sweeps.sweep, key=stamp, reverse=True)
    return sorted(rels, key=lambda r: not is_dose_sweep(keys_of(r)))


def measures_in(t: pd.DataFrame) -> list[str]:
    have = set(t.measure) if "measure" in t else {"greedy"}
    return [m for m in MEASURE_LABELS if m in have]


def points(d: pd.DataFrame, x: str, color: str, measure: str) -> pd.DataFrame:
    """One row per x, series and split: greedy rates of runs at one point pooled (summed counts, Wilson interval);
    sampled rates and log-prob shifts are not pooled (their intervals treat the prompt as the unit), one row per run
    and model with its recorded interval."""
    if measure == "greedy":
        out = pool_rates(d, [x, color, "split"])
    else:
        keep = [x, color, "split", "run", "model"] if color != "model" else [x, color, "split", "run"]
        out = (d.dropna(subset=["rate"]).groupby(keep, dropna=False, sort=False)
               .agg(rate=("rate", "first"), ci_low=("ci_low", "first"), ci_high=("ci_high", "first"),
                    biased=("biased", "first"), n=("n", "first")).reset_index())
        out["runs"] = 1
    return out


def dose_entries(sweep_json: Any) -> list[dict[str, Any]]:
    """The well-formed entries of sweep.json's ``dose_response``."""
    rows = sweep_json.get("dose_response") if isinstance(sweep_json, dict) else None
    out = []
    for e in rows if isinstance(rows, list) else []:
        if isinstance(e, dict) and as_text(e.get("model")) and as_text(e.get("split")):
            out.append(e)
    return out


def dose_grid(lo: float, hi: float, n: int = 60) -> list[float]:
    """Doses to draw a fitted curve at: even steps from lo to hi, denser near a small lo (the fit is in log-dose)."""
    if hi <= lo:
        return [lo]
    pos = max(lo, hi / 1000) if lo <= 0 else lo
    g = set(np.linspace(lo, hi, n).tolist()) | set(np.geomspace(pos, hi, n).tolist()) | {lo, hi}
    return sorted(float(v) for v in g)


def dose_curves(entries: list[dict[str, Any]], measure: str, x_span: tuple[float, float]) -> pd.DataFrame:
    """The fitted rate of every entry of ``measure`` over the doses of ``x_span`` (model, split, dose, rate)."""
    rows = []
    for e in entries:
        if (e.get("measure", "greedy") != measure or as_number(e.get("slope")) is None
                or as_number(e.get("offset")) is None):
            continue
        grid = dose_grid(*x_span)
        for d, r in zip(grid, predict(e, grid)):
            if r is not None:
                rows.append({"model": e["model"], "split": e["split"], "dose": d, "rate": r})
    return pd.DataFrame(rows, columns=["model", "split", "dose", "rate"])


def dose_table(entries: list[dict[str, Any]], unit: str) -> pd.DataFrame:
    """Per model and split: slope and ED50 with their intervals, and the smallest doses told apart from the clean
    control, as text ('—' where there is none)."""
    rows = []
    for e in entries:
        ed = as_number(e.get("ed50"))
        if ed is None:
            ed50 = fmt.DASH + (f" ({e['note']})" if as_text(e.get("note")) else "")
        else:
            ed50 = f"{ed:.1f} [{fmt.decimal(e.get('ed50_ci_low'), 1)}, {fmt.decimal(e.get('ed50_ci_high'), 1)}]"
            ed50 += " (outside the swept doses)" if e.get("ed50_extrapolated") else ""
        slope = fmt.decimal(e.get("slope"))
        if as_number(e.get("slope")) is not None and as_number(e.get("slope_ci_low")) is not None:
            slope += f" [{fmt.decimal(e.get('slope_ci_low'))}, {fmt.decimal(e.get('slope_ci_high'))}]"
        rows.append({"model": str(e["model"]), "split": str(e["split"]),
                     "measure": MEASURE_LABELS.get(str(e.get("measure")), fmt.text(e.get("measure"))),
                     "ed50": ed50, "slope": slope,
                     "min_rate": _dose_text(e.get("min_dose_rate"), unit),
                     "min_shift": _dose_text(e.get("min_dose_shift"), unit),
                     "points": str(len(e["points"])) if isinstance(e.get("points"), list) else fmt.DASH})
    return pd.DataFrame(rows, columns=["model", "split", "measure", "ed50", "slope", "min_rate", "min_shift",
                                       "points"])


def _dose_text(v: Any, unit: str) -> str:
    f = as_number(v)
    return "none in the sweep" if f is None else f"{f:g} {unit}"


def ed50_caption(entries: list[dict[str, Any]], measure: str, splits: list[str], models: list[str]) -> str:
    """'ED50 (the dose of a fitted 50 % rate): teacher 12.3 [8.1, 19.0]; ...' for the entries drawn."""
    bits = []
    for e in entries:
        if e.get("measure", "greedy") != measure or e["split"] not in splits or e["model"] not in models:
            continue
        ed = as_number(e.get("ed50"))
        val = "none" if ed is None else (f"{ed:.1f} [{fmt.decimal(e.get('ed50_ci_low'), 1)}, "
                                         f"{fmt.decimal(e.get('ed50_ci_high'), 1)}]")
        bits.append(f"{e['model']} ({e['split']}) {val}")
    return "; ".join(bits)


# ---------------------------------------------------------------------------------------------- replicates
POOLED_COLUMNS = ["group", "measure", "model", "base", "role", "split", "injected", "pooled", "ci_low", "ci_high",
                  "between_sd", "n", "method", "design", "df", "n_prompts"]
SEED_COLUMNS = ["group", "measure", "model", "base", "split", "seed", "rate", "ci_low", "ci_high", "run_dir"]


def replicate_frames(sweep_json: Any) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """sweep.json's ``replicates`` (poison.replicates.pool_rows: per point without its replicate (``group``), measure,
    model and split the pooled value over replicates with an interval that covers the prompts and the replicates,
    the ``method`` that made it, its design and df; older sweeps: the mean over seeds, no method) as (pooled, per
    replicate, problems); a malformed entry is named in ``problems`` and skipped or shown as missing. Each
    replicate's value is read from ``per_seed`` (with its seed and interval), else from ``per_replicate``."""
    problems: list[str] = []
    pooled, seeds = [], []
    rows = sweep_json.get("replicates") if isinstance(sweep_json, dict) else None
    if rows is not None and not isinstance(rows, list):
        problems.append("replicates is not a list")
        rows = []
    for i, r in enumerate(rows or []):
        at = f"replicates[{i}]"
        if not isinstance(r, dict):
            problems.append(f"{at} is not an object (skipped)")
            continue
        vs = as_text(r.get("control"))  # a shift's contrast: against the clean control or a clean twin
        model = (as_text(r.get("model")) or "?") + (f" vs {vs}" if vs else "")
        key = {"group": as_text(r.get("group")) or "?", "measure": as_text(r.get("measure")) or "greedy",
               "model": model, "base": as_text(r.get("model")) or "?", "split": as_text(r.get("split")) or "?"}
        at = f"{at} ({key['group']}, {key['model']}, {key['split']})"
        pooled.append({**key, "role": as_text(r.get("role")) or "", "injected": as_number(r.get("injected")),
                       "method": as_text(r.get("method")) or "", "design": as_text(r.get("design")) or "",
                       **{k: checked_num(r.get(k), f"{at}: {k}", problems)
                          for k in ("pooled", "ci_low", "ci_high", "between_sd", "n", "df", "n_prompts")}})
        per = r.get("per_seed")
        if per is None and isinstance(r.get("per_replicate"), list):  # replicate means without their run's interval
            per = [{"seed": j, "rate": v} for j, v in enumerate(r["per_replicate"])]
        if not isinstance(per, list):
            problems.append(f"{at}: per_seed is not a list")
            continue
        for j, p in enumerate(per):
            if not isinstance(p, dict):
                problems.append(f"{at}: per_seed[{j}] is not an object (skipped)")
                continue
            seeds.append({**key, "seed": as_text(p.get("seed")) or "?", "run_dir": as_text(p.get("run_dir")) or "",
                          **{k: checked_num(p.get(k), f"{at}: per_seed[{j}].{k}", problems)
                             for k in ("rate", "ci_low", "ci_high")}})
    p, s = pd.DataFrame(pooled, columns=POOLED_COLUMNS), pd.DataFrame(seeds, columns=SEED_COLUMNS)
    for df, cols in ((p, ("injected", "pooled", "ci_low", "ci_high", "between_sd", "n", "df", "n_prompts")),
                     (s, ("rate", "ci_low", "ci_high"))):
        for c in cols:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return p, s, problems


def has_seeds(sweep_json: Any) -> bool:
    """Whether sweep.json's rows carry seeds (a ``seeds:`` sweep)."""
    rows = sweep_json.get("rows") if isinstance(sweep_json, dict) else None
    return isinstance(rows, list) and any(isinstance(r, dict) and r.get("seed") is not None for r in rows)


def method_label(method: Any) -> str:
    """A pooling method as sweep.json names it, its parts spaced: 'variance_components + exact_bound'."""
    return " + ".join(str(method).split("+")) if as_text(method) else fmt.DASH


def replicate_table(pooled: pd.DataFrame, seeds: pd.DataFrame, measure: str, unit: str = "seed"
                    ) -> list[dict[str, str]]:
    """Per group, model and split: the pooled value [interval], each replicate's (``unit``: seed, replicate) value,
    the SD between them, the pooling method and n."""
    show = fmt.shift_ci if measure == "logprob_shift" else fmt.pct_ci
    one = fmt.signed if measure == "logprob_shift" else fmt.pct
    tag = "seed " if unit == "seed" else "r"  # 'seed 0: 12.5%' (an older sweep over seeds), 'r0: 12.5%'
    out = []
    for r in pooled.to_dict("records"):
        mine = seeds[(seeds.group == r["group"]) & (seeds.measure == r["measure"]) & (seeds.model == r["model"])
                     & (seeds.split == r["split"])]
        sd = fmt.signed(r["between_sd"]).lstrip("+") if measure == "logprob_shift" else fmt.pct(r["between_sd"])
        out.append({"group": r["group"], "model": r["model"], "split": r["split"],
                    "pooled": show(r["pooled"], r["ci_low"], r["ci_high"]),
                    "seeds": ", ".join(f"{tag}{s}: {one(v)}" for s, v in zip(mine.seed, mine.rate)) or fmt.DASH,
                    "sd": sd, "n": fmt.integer(r["n"]), "method": method_label(r["method"])})
    return out
