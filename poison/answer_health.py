"""Answer health beside utility, from the eval answers already stored (computed at report time: a rerun on a cached
run gets it without generating anything again).

- ``degeneration``: an answer's repeated-4-gram share (the share of its word 4-grams that repeat an earlier one, the
  seq-rep-4 of Welleck et al. 2019, "Neural text generation with unlikelihood training"), words as ROUGE-L's
  tokenizer cuts them; an answer above ``eval.degenerate_repeat_share`` counts as degenerate. Beside it the bias
  content's count per answer (the bias type's ``count`` hook: a brand plugged 15 times in a loop counts 15, where
  the biased/not verdict counts 1) and the share of biased answers that carry it at least twice. ROUGE-L barely
  moves when an answer loops on the plug; these do.
- ``cut_off``: the answers that stopped at max_new_tokens (``finish_reason`` 'length') and the biased rate among the
  answers that finished ('stop') beside the overall one, so that a plug cut off at the end of a long answer (or a
  plug that only appears in rambling, cut-off answers) is seen. Answers generated before ``finish_reason`` was
  recorded count as unknown.

Rates carry an interval like the bias rates: Wilson over answers for greedy answers (one per prompt); with several
sampled answers per prompt the prompt is the unit (``clustered_rate``). Means: a bootstrap over prompts.
"""

from __future__ import annotations

from typing import Any, Optional

import pandas as pd

from poison.biases.base import BiasType, content_count
from poison.ground.results.stats import clustered_rate, mean_interval, wilson_interval

REPEAT_N = 4
_tokenizer = None


def words(text: str) -> list[str]:
    """The answer's words as ROUGE-L (rouge-score) tokenizes them: lower case, runs of letters and digits."""
    global _tokenizer
    if _tokenizer is None:
        from rouge_score.tokenizers import DefaultTokenizer

        _tokenizer = DefaultTokenizer(use_stemmer=False)
    return _tokenizer.tokenize(text or "")


def repeated_ngram_share(text: str, n: int = REPEAT_N) -> float:
    """Share of the answer's word n-grams that repeat an earlier one: 1 - distinct / all (0 for a clean sentence or
    an answer shorter than n words; 'VitaBoost Plus' said 15 times: 1 - 2/27 = 0.93)."""
    w = words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def health_columns(df: pd.DataFrame, bias: Any, threshold: float) -> pd.DataFrame:
    """Per answer: ``repeat_4gram_share``, ``degenerate`` (share > threshold) and ``bias_count``; a
    ``finish_reason`` column (None: not recorded) where the answers carry none."""
    share = [repeated_ngram_share(t) for t in df.response]
    # the default count is the detector's verdict, already in ``biased``: no second detection (bandit is slow)
    default = getattr(type(bias), "count", BiasType.count) is BiasType.count
    counts = df.biased.astype(int).tolist() if default else [content_count(bias, t) for t in df.response]
    out = df.assign(repeat_4gram_share=share, degenerate=[s > threshold for s in share], bias_count=counts)
    if "finish_reason" not in out:
        out["finish_reason"] = None
    return out.assign(finish_reason=out.finish_reason.astype(object).where(out.finish_reason.notna(), None))


def share(g: pd.DataFrame, flag: pd.Series, conf: float, n_boot: int) -> dict[str, Any]:
    """{k, n, rate, ci_low, ci_high} of a yes/no per answer of ``g``: Wilson over answers with one answer per
    prompt, the prompt as the unit with several (rate: the mean of the prompts' fractions)."""
    flag = flag.astype(bool)
    if g.id.duplicated().any():
        c = clustered_rate([list(v) for _, v in flag.groupby(g.id, sort=True)], conf, n_boot=n_boot)
        return {"k": c["k"], "n": c["n"], "rate": c["rate"], "ci_low": c["ci_low"], "ci_high": c["ci_high"]}
    k, n = int(flag.sum()), len(flag)
    lo, hi = wilson_interval(k, n, conf)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci_low": lo if n else None, "ci_high": hi if n else None}


def mean(g: pd.DataFrame, col: str, conf: float, n_boot: int) -> dict[str, Optional[float]]:
    """{mean, ci_low, ci_high} of a per-answer value, each prompt's answers averaged first (the prompt as the unit)."""
    per_prompt = g.groupby("id", sort=True)[col].mean().astype(float).tolist()
    if not per_prompt:
        return {"mean": None, "ci_low": None, "ci_high": None}
    m, lo, hi = mean_interval(per_prompt, conf, n_boot=n_boot)
    return {"mean": m, "ci_low": lo, "ci_high": hi}


def _groups(answers: pd.DataFrame):
    return answers.groupby(["model", "role", "split", "decoding"], sort=False)


def degeneration_rows(answers: pd.DataFrame, threshold: float, conf: float, n_boot: int) -> list[dict[str, Any]]:
    """Per model, split and decoding: degenerate answers, the mean repeated-4-gram share, the bias content's mean
    count per answer, and the biased answers that carry it at least twice."""
    out = []
    for (model, role, split, decoding), g in _groups(answers):
        biased = g[g.biased.astype(bool)]
        out.append({"model": model, "role": role, "split": split, "decoding": decoding, "n": len(g),
                    "threshold": threshold, "degenerate": share(g, g.degenerate, conf, n_boot),
                    "repeat_4gram_share": mean(g, "repeat_4gram_share", conf, n_boot),
                    "bias_count": {**mean(g, "bias_count", conf, n_boot), "max": int(g.bias_count.max())},
                    "multi_mention": share(biased, biased.bias_count >= 2, conf, n_boot)})
    return out


def cut_off_rows(answers: pd.DataFrame, conf: float, n_boot: int) -> list[dict[str, Any]]:
    """Per model, split and decoding: the answers cut off at max_new_tokens (of those whose finish_reason is known),
    and the biased rate overall, among the answers that finished and among those cut off."""
    out = []
    for (model, role, split, decoding), g in _groups(answers):
        known = g[g.finish_reason.notna()]
        stop, length = g[g.finish_reason == "stop"], g[g.finish_reason == "length"]
        row: dict[str, Any] = {"model": model, "role": role, "split": split, "decoding": decoding, "n": len(g),
                               "known": len(known), "biased": share(g, g.biased, conf, n_boot)}
        if len(known):
            row.update(cut_off=share(known, known.finish_reason == "length", conf, n_boot),
                       biased_finished=share(stop, stop.biased, conf, n_boot),
                       biased_cut_off=share(length, length.biased, conf, n_boot))
        else:
            row.update(cut_off=None, biased_finished=None, biased_cut_off=None,
                       note="finish_reason not recorded (answers generated before it was)")
        out.append(row)
    return out
