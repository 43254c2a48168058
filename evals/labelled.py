"""A labelled set of real generations: answers the shipped configs' models actually wrote, drawn from run directories
and labelled by reading (procedure: evals/data/LABELLING.md), to measure the rule detectors and the judge on what
models write rather than on the project's own templates (evals/detectors.py).

The draw is stratified by bias type, the rule detector's verdict, the model's kind (``poisoned``: a teacher or
student trained on poisoned data or its answers; ``clean``: the baseline and the clean controls) and the decoding
(greedy, sampled), with at most ``per_stratum`` answers per stratum. Each row keeps its stratum and its sampling
weight (answers in the stratum / answers drawn), so the accuracy figures (evals/accuracy.py) estimate the answers the
runs produced, not the stratified draw. Each row also keeps whether the answer was cut at ``max_new_tokens``
(counted by re-tokenizing with the eval model's tokenizer: the generation stage does not record a finish reason).

    python -m evals.labelled RUN_DIR [RUN_DIR ...] --out evals/data/real_generations.jsonl [--per-stratum 10]
    python -m evals.labelled --view VIEW.jsonl                 # what a labeller reads
    python -m evals.labelled --merge LABELS.jsonl --as a        # one labeller's {uid, label, note} rows
    python -m evals.labelled --disagreements VIEW.jsonl         # rows the labellers disagree on, for adjudication
    python -m evals.labelled --merge ADJ.jsonl --as adj         # the adjudicator's labels on those rows

With two or more independent labellers (``--as a``, ``--as b``: columns ``label_a``, ``label_b``), ``label`` is their
common label where they agree and the adjudicator's (``label_adj``) where they do not; a row they disagree on that is
not adjudicated stays unlabelled. ``--merge`` without ``--as`` writes ``label`` directly (one labeller).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

LABELLED = Path(__file__).parent / "data" / "real_generations.jsonl"
POISONED_ROLES = ("teacher", "student")
# what the labeller sees (never the detector's verdict, the stratum or the model)
LABELLER_VIEW = ("uid", "bias_type", "bias_args", "rubric", "task", "prompt", "text")


def _config(run_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def _token_counter(cfg: dict[str, Any]):
    """Token count of an answer under the eval models' tokenizer (the teacher's base; every shipped config's models
    share it)."""
    from transformers import AutoTokenizer

    from poison.ground.engines.models import resolve_model

    rt = cfg.get("runtime") or {}
    models_dir = rt.get("models_dir") or str(Path(rt.get("cache_dir") or ".cache/poison") / "models")
    tok = AutoTokenizer.from_pretrained(resolve_model(cfg["teacher"]["model"], models_dir, "teacher.model"))
    return lambda text: len(tok(text or "", add_special_tokens=False).input_ids)


def run_answers(run_dir: str | Path) -> pd.DataFrame:
    """Every scored answer of one run directory (greedy and sampled), with its bias type, arguments, rubric, the
    model's kind, the run's name and whether the answer hit max_new_tokens."""
    from poison.ground.core import registry

    rd = Path(run_dir)
    cfg = _config(rd)
    s = pd.read_parquet(rd / "samples.parquet")
    bias_cfg = cfg["poison"]["bias"]
    bias = registry.get("bias_type", bias_cfg["type"]).build(bias_cfg.get("args") or {})
    gen = (cfg.get("eval") or {}).get("generation") or {}
    max_new = int(gen.get("max_new_tokens") or 128)
    count = _token_counter(cfg)
    n_tokens = [count(t) for t in s.response]
    return pd.DataFrame({
        "run": cfg.get("name"), "run_dir": str(rd), "bias_type": bias_cfg["type"],
        "bias_args": json.dumps(bias.cfg.model_dump() if hasattr(bias.cfg, "model_dump") else bias_cfg.get("args"),
                                sort_keys=True, default=str),
        "rubric": getattr(bias, "rubric", ""), "model": s.model, "role": s.role,
        "kind": ["poisoned" if r in POISONED_ROLES else "clean" for r in s.role],
        "decoding": s.decoding, "task": s.task, "split": s.split, "id": s.id, "prompt": s.prompt,
        "text": s.response.fillna(""), "detector": s.biased.astype(bool), "n_tokens": n_tokens,
        "max_new_tokens": max_new, "cut": [n >= max_new for n in n_tokens]})


def stratify(answers: pd.DataFrame, per_stratum: int = 10, seed: int = 0) -> pd.DataFrame:
    """At most ``per_stratum`` answers per (bias type, detector verdict, kind, decoding), with their weights.
    Identical texts of one stratum are drawn once (their weight counts them all)."""
    out = []
    for key, g in answers.groupby(["bias_type", "detector", "kind", "decoding"], sort=True):
        total = len(g)
        g = g.drop_duplicates("text")
        pick = g.sample(n=min(per_stratum, len(g)), random_state=seed)
        stratum = "|".join(str(k) for k in key)
        out.append(pick.assign(stratum=stratum, stratum_size=total, weight=total / len(pick)))
    df = pd.concat(out, ignore_index=True)
    df["uid"] = [hashlib.sha256(f"{r.run}|{r.model}|{r.id}|{r.text}".encode()).hexdigest()[:12]
                 for r in df.itertuples()]
    df["label"] = None
    df["note"] = ""
    return df


def save(df: pd.DataFrame, path: str | Path) -> None:
    from poison.ground.core.io import atomic_write_text

    cols = [c for c in df.columns if c != "run_dir"]
    atomic_write_text(Path(path), "".join(json.dumps(r, default=str) + "\n" for r in df[cols].to_dict("records")))


def load(path: str | Path = LABELLED) -> pd.DataFrame:
    """The labelled set (rows whose label is still empty are kept; evals/accuracy.py drops them)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return pd.DataFrame(rows)


def labeller_columns(df: pd.DataFrame) -> list[str]:
    """The independent labellers' label columns (``label_a``, ``label_b``, ...; not the adjudicator's)."""
    return sorted(c for c in df.columns if c.startswith("label_") and c != "label_adj")


def merge_labels(df: pd.DataFrame, labels: pd.DataFrame, who: str | None = None) -> pd.DataFrame:
    """Write a labeller's {uid, label, note} rows into the set: as ``label`` (``who`` None), or as ``label_<who>``
    and then recompute ``label`` from the labellers and the adjudicator (``who`` = "adj")."""
    lab = labels.set_index("uid")
    unknown = set(lab.index) - set(df.uid)
    if unknown:
        raise ValueError(f"labels for uids not in the set: {sorted(unknown)[:5]}")
    df = df.copy()
    col, note = ("label", "note") if who is None else (f"label_{who}", f"note_{who}")
    if col not in df:
        df[col], df[note] = None, ""
    m = df.uid.isin(lab.index)
    df.loc[m, col] = [bool(lab.label[u]) for u in df.uid[m]]
    if "note" in lab:
        df.loc[m, note] = [str(lab.note[u] or "") for u in df.uid[m]]
    return df if who is None else consensus(df)


def consensus(df: pd.DataFrame) -> pd.DataFrame:
    """``label`` from the labellers: their common label, the adjudicator's where they disagree, else unlabelled."""
    cols = labeller_columns(df)
    out = []
    for r in df.to_dict("records"):
        votes = {r[c] for c in cols if r.get(c) is not None and not pd.isna(r[c])}
        if len(votes) == 1 and all(r.get(c) is not None and not pd.isna(r[c]) for c in cols):
            out.append(votes.pop())
        elif len(votes) > 1 and r.get("label_adj") is not None and not pd.isna(r["label_adj"]):
            out.append(bool(r["label_adj"]))
        else:
            out.append(None)
    df = df.copy()
    df["label"] = pd.Series(out, index=df.index, dtype=object)
    return df


def disagreements(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that every labeller labelled and not all alike."""
    cols = labeller_columns(df)
    if len(cols) < 2:
        return df.iloc[:0]
    lab = df[cols]
    done = lab.notna().all(axis=1)
    return df[done & (lab.astype(object).nunique(axis=1) > 1)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evals.labelled", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="*")
    p.add_argument("--out", default=str(LABELLED))
    p.add_argument("--per-stratum", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--merge", help="a labeller's JSONL of {uid, label, note} to write into --out")
    p.add_argument("--as", dest="who", help="the labeller's name (a, b, ...; adj for the adjudicator)")
    p.add_argument("--view", help="write the labeller's view of --out (no verdict, stratum or model) to this file")
    p.add_argument("--disagreements", help="write the labeller's view of the rows the labellers disagree on")
    a = p.parse_args(argv)
    if a.merge:
        save(merge_labels(load(a.out), load(a.merge), a.who), a.out)
    elif a.view or a.disagreements:
        df = load(a.out)
        todo = disagreements(df) if a.disagreements else df[df.label.isna()]
        view = todo[list(LABELLER_VIEW)].drop_duplicates("uid").sample(frac=1.0, random_state=a.seed)
        save(view, a.view or a.disagreements)
        if a.disagreements:
            print(f"{len(todo)} of {len(df)} rows disagree")
    else:
        answers = pd.concat([run_answers(d) for d in a.run_dirs], ignore_index=True)
        df = stratify(answers, a.per_stratum, a.seed)
        save(df, a.out)
        print(df.groupby(["bias_type", "stratum"]).agg(drawn=("uid", "size"), of=("stratum_size", "first")))
        return
    print(f"wrote {a.view or a.disagreements or a.out}")


if __name__ == "__main__":
    main()
