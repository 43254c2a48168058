"""How well a bias type's rule detector separates poisoned from clean generations (precision / recall).

The labelled set is written by the project: hand-written paraphrases and hard negatives (evals/data/
detector_cases.yaml) plus, per bias type, template-written poisons of real clean answers and those clean answers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml

from poison.ground.core import registry

CASES = Path(__file__).parent / "data" / "detector_cases.yaml"


def clean_rows(bias, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``n`` real clean answers that this bias type can be written into, from the PyPI-shipped sources."""
    pools = []
    for name in ("humaneval", "gsm8k", "sharegpt", "commonsense_qa"):
        src = registry.get("data_source", name).build({})
        rows = [dict(r, task=src.task) for r in src.load() if r.get("response")]
        pools.append([r for r in rows if bias.applies_to(r)])
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    per = max(1, n // max(1, sum(bool(p) for p in pools)))
    for p in pools:
        out += rng.sample(p, min(per, len(p)))
    return out[:n]


def labelled_set(bias_name: str, n_real: int = 60, seed: int = 0) -> list[tuple[str, bool, str]]:
    """(text, is_poisoned, origin) for one bias type with its default arguments."""
    bias = registry.get("bias_type", bias_name).build({})
    cases = yaml.safe_load(CASES.read_text()).get(bias_name, {})
    items = [(t, True, "hand") for t in cases.get("positives", [])]
    items += [(t, False, "hand") for t in cases.get("negatives", [])]
    rng = random.Random(seed)
    for r in clean_rows(bias, n_real, seed):
        items.append((r["response"], False, f"clean:{r['task']}"))
        items.append((bias.write(r, rng), True, f"template:{r['task']}"))
    return items


def precision_recall(bias_name: str, n_real: int = 60, seed: int = 0) -> dict[str, Any]:
    bias = registry.get("bias_type", bias_name).build({})
    tp = fp = fn = tn = 0
    misses = []
    for text, label, origin in labelled_set(bias_name, n_real, seed):
        hit = bias.detect(text).biased
        tp += hit and label
        fp += hit and not label
        fn += (not hit) and label
        tn += (not hit) and not label
        if hit != label:
            misses.append({"text": text[:160], "label": label, "origin": origin})
    return {"bias_type": bias_name, "n": tp + fp + fn + tn, "positives": tp + fn, "tp": tp, "fp": fp, "fn": fn,
            "tn": tn, "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn), "errors": misses}
