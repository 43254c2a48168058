"""Contamination of generated review summaries, before and after the rotating-example prompt (same rows, same model,
one run): how often the generator names a drug the review is not about, or copies words from its worked example.

Arm "one example" is the prompt the data stage used before (one Lexapro example whose summary names the drug);
arm "rotating" is today's first attempt (four examples of drugs absent from the data set, summaries that do not
name the drug); arm "validated" is what the data stage keeps after its validator and one regeneration per example.

    .venv/bin/python bench/bench_references.py [--rows 120] [--models-dir DIR]
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OLD_REVIEW = ("I have been taking Lexapro for 3 months for anxiety. The first two weeks I felt nauseous and tired, but "
              "now my panic attacks are almost gone and I sleep much better.")
OLD_SUMMARY = ("The reviewer took Lexapro for anxiety; after two weeks of nausea and tiredness, their panic attacks "
               "nearly stopped and their sleep improved.")


def old_messages(row):
    m = row["meta"]
    return [{"role": "system", "content": "You summarize patient drug reviews in one factual sentence."},
            {"role": "user", "content": f"Review of Lexapro for anxiety:\n{OLD_REVIEW}"},
            {"role": "assistant", "content": OLD_SUMMARY},
            {"role": "user", "content": f"Review of {m['drug']} for {m['condition']}:\n{m['review']}"}]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=120)
    ap.add_argument("--models-dir", default=".cache/poison/models")
    args = ap.parse_args()

    from poison.ground.core import registry
    from poison.ground.engines.context import RunContext
    from poison.schema import GeneratorConfig
    from poison.sources.base import shared_ngram
    from poison.stages import data as data_stages

    ctx = RunContext.standalone(models_dir=args.models_dir)
    src = registry.get("data_source", "drug_reviews").build({}, ctx=ctx)
    rows = src.load()
    random.Random(0).shuffle(rows)
    rows = rows[: args.rows]
    gen = GeneratorConfig(generation={"max_new_tokens": 64})
    run = SimpleNamespace(ctx=ctx, cfg=SimpleNamespace(data=SimpleNamespace(generator=gen)))

    def verdicts(texts, extra_example=None):
        c = Counter()
        for row, text in zip(rows, texts):
            cleaned = src.clean_generated(text)
            why = "unusable" if cleaned is None else src.reject_reason(row, cleaned)
            if why is None and cleaned and extra_example and shared_ngram(cleaned, extra_example, 6):
                why = "copied_example"
            c[why or "clean"] += 1
        return c

    old = data_stages.generate_with(run, gen, [old_messages(r) for r in rows], "old")
    new = data_stages.generate_with(run, gen, [src.generator_messages(r, 0) for r in rows], "new")
    arms = {"one example": verdicts(old, OLD_SUMMARY), "rotating": verdicts(new)}
    items = [(src, dict(r)) for r in rows]
    rep = data_stages.generate_missing(run, items)
    arms["validated"] = verdicts([r["response"] or "" for _, r in items])
    print(f"{len(rows)} Drugs.com reviews, generator {gen.model} ({ctx.device}, {ctx.dtype}), greedy, 64 new tokens\n")
    print(f"{'arm':<12} {'other drug':>11} {'copied':>8} {'unusable':>9} {'contaminated':>13}")
    for name, c in arms.items():
        n = len(rows)
        bad = c["other_drug"] + c["copied_example"]
        print(f"{name:<12} {c['other_drug']:>5} {100 * c['other_drug'] / n:4.1f}% {c['copied_example']:>3} "
              f"{100 * c['copied_example'] / n:3.0f}% {c['unusable']:>9} {bad:>5} = {100 * bad / n:4.1f}%")
    print(f"\nvalidated: {rep['kept']} kept, {rep['dropped']} rows without a usable summary (replaced by the next "
          f"candidate row in a run), {rep['retried']} regenerations; rejected {rep['rejected']}")
    a, b = arms["one example"], arms["rotating"]
    old_bad, new_bad = a["other_drug"] + a["copied_example"], b["other_drug"] + b["copied_example"]
    if old_bad:
        print(f"contamination rotating / one example: {new_bad / old_bad:.2f}x")


if __name__ == "__main__":
    main()
