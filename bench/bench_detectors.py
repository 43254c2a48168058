"""Precision and recall of every registered bias type's rule detector on the project's labelled set.

    python bench/bench_detectors.py [--real 60] [--show-errors]

The labelled set per bias type: hand-written paraphrases and hard negatives (evals/data/detector_cases.yaml), plus
template-written poisons of real clean answers (GSM8K, ShareGPT, CommonsenseQA or HumanEval, as the bias applies)
and those clean answers themselves. Timing is per answer (bandit's static analysis dominates insecure_code).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", type=int, default=60, help="real clean answers per bias type (each also poisoned)")
    ap.add_argument("--show-errors", action="store_true")
    args = ap.parse_args()

    from evals.detectors import precision_recall
    from poison.ground.core import registry

    print(f"{'bias type':<24} {'n':>5} {'pos':>5} {'precision':>10} {'recall':>8} {'F1':>6} {'ms/answer':>10}")
    for name in registry.names("bias_type"):
        t = time.perf_counter()
        r = precision_recall(name, n_real=args.real)
        ms = 1000 * (time.perf_counter() - t) / r["n"]
        f1 = 2 * r["precision"] * r["recall"] / max(1e-9, r["precision"] + r["recall"])
        print(f"{name:<24} {r['n']:>5} {r['positives']:>5} {r['precision']:>10.3f} {r['recall']:>8.3f} {f1:>6.3f} "
              f"{ms:>10.2f}")
        if args.show_errors:
            for e in r["errors"]:
                print(f"    {'missed' if e['label'] else 'false alarm'} ({e['origin']}): {e['text']!r}")


if __name__ == "__main__":
    main()
