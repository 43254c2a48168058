"""How the dashboard writes numbers and names: rates as percentages with one decimal, ratios with two, intervals in
brackets, "—" for anything missing (never a literal None or nan), and human words for snake_case keys. Pure
functions, no Streamlit."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

DASH = "—"

# column / metric keys -> what a reader calls them
WORDS = {
    "auroc": "AUROC", "tpr_at_1pct_fpr": "TPR at 1% FPR", "precision": "precision", "recall": "recall",
    "threshold": "threshold", "n": "samples", "n_poisoned": "poisoned samples", "n_flagged": "flagged",
    "place": "applied to", "defense": "defense", "n_prompts": "prompts", "k": "biased", "biased": "biased",
    "rate": "rate", "ci_low": "CI low", "ci_high": "CI high", "split": "split", "model": "model", "role": "role",
    "method": "method", "student": "student", "teacher": "teacher", "wording": "wording", "control": "against",
    "samples_per_prompt": "samples per prompt", "prompts_with_any": "prompts with any biased sample",
    "prompts_with_any_rate": "share of prompts with any biased sample", "removed": "removed",
    "n_removed": "removed", "poisoned_removed": "poisoned removed", "clean_removed": "clean removed",
}


def missing(x: Any) -> bool:
    if x is None or x is pd.NA or x is pd.NaT:
        return True
    if isinstance(x, float):
        return math.isnan(x)
    try:
        return bool(pd.isna(x)) if not isinstance(x, (str, list, tuple, dict)) else False
    except (TypeError, ValueError):
        return False


def num(x: Any) -> float | None:
    """A finite float, or None (for None, NaN, text that is no number, booleans)."""
    if missing(x) or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def pct(x: Any, digits: int = 1) -> str:
    f = num(x)
    return DASH if f is None else f"{100 * f:.{digits}f}%"


def _bracket(lo: Any, hi: Any, f, unbounded: str = "∞") -> str:
    a, b = num(lo), num(hi)
    if a is None and b is None:
        return ""
    return f" [{DASH if a is None else f(a)}, {unbounded if b is None else f(b)}]"


def pct_ci(rate: Any, lo: Any, hi: Any) -> str:
    """'77.5% [62.5, 87.7]' (the interval in percent too), '—' without a rate."""
    if num(rate) is None:
        return DASH
    a, b = num(lo), num(hi)
    if a is None or b is None:
        return pct(rate)
    return f"{pct(rate)} [{100 * a:.1f}, {100 * b:.1f}]"


def ratio(x: Any) -> str:
    f = num(x)
    return DASH if f is None else f"{f:.2f}×"


def ratio_ci(r: Any, lo: Any, hi: Any, undefined: bool = False) -> str:
    """'1.13× [0.92, 1.39]'; an upper limit of None is unbounded ('∞'); 'undefined' when the ratio has no value
    because the teacher's rate is 0 (with ``undefined``), else '—'."""
    if num(r) is None:
        return "undefined" if undefined else DASH
    return ratio(r) + _bracket(lo, hi, lambda v: f"{v:.2f}")


def signed(x: Any, digits: int = 2) -> str:
    f = num(x)
    return DASH if f is None else f"{f:+.{digits}f}"


def shift_ci(s: Any, lo: Any, hi: Any) -> str:
    if num(s) is None:
        return DASH
    return signed(s) + _bracket(lo, hi, lambda v: f"{v:+.2f}")


def pp(x: Any) -> str:
    """A difference of two rates in percentage points: '−72.5 pp'."""
    f = num(x)
    return DASH if f is None else f"{100 * f:+.1f} pp".replace("-", "−")


def integer(x: Any) -> str:
    f = num(x)
    return DASH if f is None else f"{round(f)}"


def decimal(x: Any, digits: int = 2) -> str:
    f = num(x)
    return DASH if f is None else f"{f:.{digits}f}"


def text(x: Any) -> str:
    """Any cell as text: '—' for missing, numbers compactly, everything else as str."""
    if missing(x):
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.4g}"
    s = str(x)
    return s if s.strip() else DASH


def words(key: str) -> str:
    """A snake_case key as words ('tpr_at_1pct_fpr' -> 'TPR at 1% FPR', 'n_flagged' -> 'flagged')."""
    key = str(key)
    if key in WORDS:
        return WORDS[key]
    return re.sub(r"\s+", " ", key.replace("_", " ")).strip()


def html_table(rows: Iterable[dict[str, Any]], columns: list[tuple[str, str]], *, cls: str = "dtable",
               max_height: int | None = None, attrs: dict[str, str] | None = None, wrap: tuple[str, ...] = ()) -> str:
    """A plain HTML table (real DOM: text a browser lays out and a test can read). ``columns``: (key, header); the
    cells are already formatted strings (escaped here) unless a key ends with ':html'; a header's second line (after
    a newline) is set in small print; ``wrap``: keys whose text may
    wrap (long free text) instead of staying on one line."""
    def th(k: str, h: str) -> str:
        first, _, rest = h.partition("\n")  # a second line: what the figure is, in small print
        sub = f'<div style="font-weight:400;color:#666;font-size:0.9em">{html.escape(rest)}</div>' if rest else ""
        return f'<th data-col="{html.escape(k.removesuffix(":html"))}">{html.escape(first)}{sub}</th>'
    head = "".join(th(k, h) for k, h in columns)
    body = []
    for r in rows:
        cells = []
        for k, _ in columns:
            v = r.get(k)
            if k.endswith(":html"):
                cells.append(f"<td>{v or DASH}</td>")
                continue
            s = v if isinstance(v, str) else text(v)
            style = ' style="white-space:normal;min-width:260px"' if k in wrap else ""
            cells.append(f"<td{style}>{html.escape(s if s.strip() else DASH)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    extra = " ".join(f'{k}="{html.escape(v)}"' for k, v in (attrs or {}).items())
    wrap = "overflow:auto;" + (f"max-height:{max_height}px;" if max_height else "")
    return (f'<div class="{cls}-wrap" style="{wrap}border:1px solid #e6e6e6;border-radius:6px">'
            f'<table class="{cls}" {extra} style="border-collapse:collapse;font-size:0.86em;width:100%">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


TABLE_CSS = """<style>
table.dtable th{position:sticky;top:0;background:#f6f6f8;text-align:left;font-weight:600;padding:5px 8px;
  border-bottom:1px solid #ddd;vertical-align:bottom;z-index:1}
table.dtable td{padding:4px 8px;border-bottom:1px solid #f0f0f0;white-space:nowrap;vertical-align:top}
table.dtable tr:hover td{background:#fafafc}
</style>"""
