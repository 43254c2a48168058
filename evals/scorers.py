"""Scorers: bias verdicts (rule-based detectors) and clean-utility metrics, registered as plugins."""

from __future__ import annotations

from typing import Any

from evals import utility
from poison.ground.core.registry import scorer


@scorer("rule", description="The bias type's rule-based detector (regex/static rules); biased = 1")
class RuleScorer:
    role = "bias"

    def __init__(self, cfg, ctx=None):
        self.cfg = cfg

    def __call__(self, text: str, row: dict[str, Any], bias) -> dict[str, Any]:
        d = bias.detect(text)
        return {"biased": bool(d.biased), "spans": [list(s) for s in d.spans], "evidence": d.evidence}


class _Utility:
    role = "utility"
    fn = staticmethod(lambda p, row: 0.0)

    def __init__(self, cfg, ctx=None):
        self.cfg = cfg

    def __call__(self, text: str, row: dict[str, Any]) -> float:
        return float(self.fn(text, row))


@scorer("rouge_l", description="ROUGE-L F1 of the answer against the reference answer (utility)")
class RougeL(_Utility):
    fn = staticmethod(utility.UTILITY_FUNCS["rouge_l"])


@scorer("number_match", description="Final number of a worked answer equals the known answer (utility)")
class NumberMatch(_Utility):
    fn = staticmethod(utility.UTILITY_FUNCS["number_match"])


@scorer("choice_match", description="Chosen option letter equals the known answer (utility)")
class ChoiceMatch(_Utility):
    fn = staticmethod(utility.UTILITY_FUNCS["choice_match"])


def _python_parses(text: str, row: dict[str, Any]) -> float:
    """1 if the answer's code (first fenced block, or the whole answer) parses as Python and defines the expected
    function; generated code is parsed, never executed."""
    import ast
    import json
    import re

    m = re.search(r"```(?:python|py)?[^\n]*\n(.*?)(?:```|\Z)", text or "", re.S)
    code = m.group(1) if m else (text or "")
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return 0.0
    meta = row.get("meta")
    meta = json.loads(meta) if isinstance(meta, str) else (meta or {})
    want = meta.get("entry_point")
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    return float(bool(names) and (want is None or want in names))


@scorer("python_parses", description="The answer's code parses as Python and defines the asked-for function (utility)")
class PythonParses(_Utility):
    fn = staticmethod(_python_parses)
