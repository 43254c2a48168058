"""Clean-utility metrics of a model's answer: ROUGE-L against a reference, the final number of a worked answer,
the chosen option letter. The scorers in ``evals.scorers`` register them as plugins."""

from __future__ import annotations

from poison.ground.core.answers import choice_letter, final_number

_rouge = None


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (rouge-score, with stemming)."""
    global _rouge
    if _rouge is None:
        from rouge_score import rouge_scorer

        _rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    if not reference:
        return 0.0
    return _rouge.score(reference, prediction or "")["rougeL"].fmeasure


def number_match(prediction: str, answer: str) -> float:
    got = final_number(prediction)
    want = final_number(str(answer))
    return float(got is not None and got == want)


def choice_match(prediction: str, answer: str) -> float:
    return float(choice_letter(prediction) == str(answer).strip().upper()[:1])


UTILITY_FUNCS = {"rouge_l": lambda p, row: rouge_l(p, row.get("reference") or ""),
                 "number_match": lambda p, row: number_match(p, row.get("answer") or ""),
                 "choice_match": lambda p, row: choice_match(p, row.get("answer") or "")}
