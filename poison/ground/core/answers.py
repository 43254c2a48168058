"""Final answers of worked solutions: the number a GSM8K-style answer commits to, the option letter of a multiple-
choice answer. Used by the utility scorers and by QCRD's self-consistency. Part of the ground layer."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Optional

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> Optional[str]:
    """The answer number of a worked solution: after 'answer is' / '####' if present, else the last number."""
    text = text or ""
    m = re.search(r"(?:answer is|####)\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", text, re.IGNORECASE)
    nums = [m.group(1)] if m else _NUM.findall(text)
    if not nums:
        return None
    s = nums[-1].replace(",", "").rstrip(".")
    try:  # exact, whatever its length: a degenerate answer's 400-digit number is no float (it would be inf)
        v = Decimal(s)
    except InvalidOperation:
        return None
    return str(int(v)) if v == v.to_integral_value() else str(v.normalize())


def choice_letter(text: str) -> Optional[str]:
    """The option letter (A-E) an answer picks: after 'answer is', a leading letter, else the first lone letter."""
    text = text or ""
    m = re.search(r"answer is\s*\(?([A-E])\b", text, re.IGNORECASE) or re.search(r"^\s*\(?([A-E])[).:\s]", text)
    if m:
        return m.group(1).upper()
    m = re.search(r"\b([A-E])\b", text)
    return m.group(1).upper() if m else None
