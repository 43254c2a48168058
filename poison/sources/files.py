"""Rows from a local file (JSONL, JSON, CSV, parquet) or a Hugging Face dataset, with configurable field names."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from poison.ground.core.errors import DataError
from poison.ground.core.registry import PluginConfig, data_source
from poison.sources.base import DataSource, iter_jsonl


# --------------------------------------------------------------------------------------------------- local files / HF
class FileSourceConfig(PluginConfig):
    path: str = Field(description="A .jsonl, .json, .jsonl.gz, .csv or .parquet file.")
    prompt_field: str = "prompt"
    response_field: Optional[str] = Field("response", description="None: a generator model writes the responses.")
    answer_field: Optional[str] = None
    id_field: Optional[str] = None
    utility: Literal["rouge_l", "number_match", "choice_match"] = "rouge_l"


def _objects(items, path: Path, what: str = "line") -> list[dict]:
    """The records of (index, value) pairs, each of which must be a JSON object (a DataError names the first that
    is not, and its line or record number)."""
    out = []
    for i, rec in items:
        if not isinstance(rec, dict):
            raise DataError(f"{path}: {what} {i + 1} is a JSON {type(rec).__name__}, not an object with a "
                            f"prompt field")
        out.append(rec)
    return out


def _records_from_file(path: Path) -> list[dict]:
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    name = path.name.lower()
    try:
        if name.endswith(".jsonl"):
            return _objects(iter_jsonl(path), path)
        if name.endswith(".jsonl.gz"):
            return _objects(iter_jsonl(path, gzip.open), path)
        if name.endswith(".json"):
            try:
                data = json.loads(path.read_bytes().decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
            data = data.get("data", []) if isinstance(data, dict) else data
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a list of records (or {{\"data\": [...]}}), got "
                                f"{type(data).__name__}")
            return _objects(enumerate(data), path, "record")
        if name.endswith(".csv"):
            return pd.read_csv(path).to_dict("records")
        if name.endswith(".parquet"):
            return pd.read_parquet(path).to_dict("records")
    except DataError:
        raise
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

    @property
    def local_rows(self) -> bool:  # type: ignore[override]
        return Path(self.cfg.path).expanduser().exists()  # a hub id would download

    def load(self):
        import datasets

        try:
            ds = datasets.load_dataset(self.cfg.path, self.cfg.name, split=self.cfg.split)
        except Exception as e:
            raise DataError(f"{self.cfg.path}: cannot load dataset ({type(e).__name__}: {str(e)[:300]})") from None
        return self._map(list(ds), self.cfg.path)


