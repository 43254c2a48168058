"""metrics.json ``defense_downstream``: what each defense buys downstream (``defense.per_defense``), and the summary's
table of it.

One row per arm: ``none`` (the undefended teacher and students), ``defended`` (the arm of ``defense.filter`` when a
filter other than ``none`` ran at the train place) and one per defense label (its own arm: the teacher trained on the
poisoned set minus what that defense alone flagged at the train place, and every student distilled from it). Each row
has what was removed at the train place (poisoned and clean rows flagged, counts and shares, from the train-place
defense stage's scores.parquet, or its removed.json for the filter's arm) and, for the arm's teacher and each student,
the greedy biased rate on the target split with its interval (the ``bias_rates`` rows) and its utility (the
``utility`` rows: their mean over tasks, weighted by prompts). The ``defended`` arm's students are also filtered at
the distill place when that place is scored (``defended_places`` in ``models``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from poison.ground.core.artifacts import read_json, read_parquet
from poison.ground.results.model_id import MAIN, Arm, ModelId

#: the split whose greedy rate each arm reports
SPLIT = "target"


def _utility(utility: list[dict[str, Any]], model: str) -> Optional[float]:
    rows = [u for u in utility if u["model"] == model and u.get("value") is not None]
    n = sum(u.get("n") or 0 for u in rows)
    return sum(u["value"] * (u.get("n") or 0) for u in rows) / n if n else None


def _model(name: str, models: dict[str, dict], rates: list[dict[str, Any]],
           utility: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """A model's figures (None when the table lacks it)."""
    if name not in models:
        return None
    r = next((r for r in rates if r["model"] == name and r["split"] == SPLIT), None) or {}
    return {"model": name, "split": SPLIT, "rate": r.get("rate"), "ci_low": r.get("ci_low"),
            "ci_high": r.get("ci_high"), "k": r.get("k"), "n": r.get("n"), "utility": _utility(utility, name)}


def _removed(ids: set[str], truth: dict[str, bool]) -> dict[str, Any]:
    n_poisoned = sum(truth.values())
    n_clean = len(truth) - n_poisoned
    poison = sum(1 for i in ids if truth.get(i))
    clean = sum(1 for i in ids if i in truth and not truth[i])
    return {"n": len(truth), "n_poisoned": n_poisoned, "n_clean": n_clean, "poison_removed": poison,
            "clean_removed": clean, "poison_recall": poison / n_poisoned if n_poisoned else None,
            "clean_lost": clean / n_clean if n_clean else None}


def downstream_rows(cfg: Any, defended: Optional[dict[str, Any]], models: dict[str, dict],
                    rates: list[dict[str, Any]], utility: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The section's rows; empty unless ``defense.per_defense`` trained its arms (``defended["per_defense"]``)."""
    arms = (defended or {}).get("per_defense") or {}
    rec = ((defended or {}).get("stages") or {}).get("train")
    if not arms or rec is None:
        return []
    scores = read_parquet(Path(rec.path) / "scores.parquet")
    first = scores[scores.instance == scores.instance.min()]
    truth = {str(i): bool(p) for i, p in zip(first.row_id, first.poisoned)}
    names = [s.name for s in cfg.students]

    def row(defense: str, kind: str, ids: set[str], arm: Arm) -> dict[str, Any]:
        students = {s: _model(str(ModelId.of_student(s, arm=arm)), models, rates, utility) for s in names}
        return {"defense": defense, "kind": kind, **_removed(ids, truth),
                "teacher": _model(str(ModelId.teacher(arm)), models, rates, utility),
                "students": {s: v for s, v in students.items() if v is not None}}

    out = [row("none", "undefended", set(), MAIN)]
    if cfg.defense.filter != "none" and str(ModelId.teacher(Arm.defended())) in models:
        out.append(row("defended", f"filter {cfg.defense.filter}", set(read_json(Path(rec.path) / "removed.json")),
                       Arm.defended()))
    for label in arms:
        sub = scores[(scores.defense == label) & scores.flagged.astype(bool)]
        out.append(row(label, "defense", set(sub.row_id.astype(str)), Arm.per_defense(label)))
    return out


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _rate(m: Optional[dict[str, Any]]) -> str:
    if not m or m.get("rate") is None:
        return "-"
    return f"{100 * m['rate']:.1f}% [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]"


def downstream_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The summary's table: defense | poison recall | clean lost | teacher bias | student bias | utility (the
    teacher's / the student's), one line per student."""
    if not rows:
        return []
    lines = ["", f"What each defense buys downstream (train place; greedy biased rate on the {SPLIT} split):",
             f"  {'defense':<18} {'poison recall':>13} {'clean lost':>11} {'teacher bias':>22} "
             f"{'student bias':>30} {'utility T / S':>16}"]
    for r in rows:
        recall = f"{_pct(r['poison_recall'])} ({r['poison_removed']}/{r['n_poisoned']})"
        lost = f"{_pct(r['clean_lost'])} ({r['clean_removed']})"
        students = r["students"] or {"-": None}
        for i, (name, s) in enumerate(students.items()):
            util = " / ".join("-" if m is None or m.get("utility") is None else f"{m['utility']:.3f}"
                              for m in ((r["teacher"], s) if i == 0 else (s,)))
            head = (f"  {r['defense']:<18} {recall:>13} {lost:>11} {_rate(r['teacher']):>22}" if i == 0
                    else f"  {'':<18} {'':>13} {'':>11} {'':>22}")
            student = f"{name} {_rate(s)}" if s is not None else "-"
            lines.append(f"{head} {student:>30} {util:>16}")
    return lines
