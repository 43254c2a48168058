"""Defense and judge stages (orchestrator side).

``stage_defense`` scores one place with every configured defense:

* ``train``: the teacher's training set (ground truth: the ``poisoned`` label written by the poison stage);
* ``distill``: the (poisoned, undefended) teacher's answers to the distillation prompts (ground truth: the bias
  type's rule detector, since nobody injected these: the teacher produced them);
* ``distill_after_train``: with both places, the defended teacher's answers (same ground truth), the last filter of
  the full chain.

A defense may fit on trusted clean samples first: the defender's own clean data, here the distillation prompts with
clean answers (the source's reference, else the clean data generator's answer: the pipeline's ``trusted`` stage; held
out from the teacher's training set and never evaluated on). Half of them (by a hash of the id) are given to ``fit``;
the other half calibrates the threshold when it is set by a false-positive budget (``fpr``: at most that fraction of
those clean samples is flagged), so a defense is never calibrated on what it was fitted on. The stage writes per-sample scores and flags, the detector figures (AUROC, TPR at 1 % FPR, precision and
recall at the threshold, against the ground truth) and the ids to remove (``defense.filter``: the union of all flags,
or one defense's).

``stage_judge`` asks the LLM autorater for a second verdict on every eval answer, with the bias type's rubric.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd

from poison.io import atomic_write_json, atomic_write_parquet

AUTORATER = "llm_autorater"


def judge_identity(pipe) -> dict[str, Any]:
    """What defines the judge for caching (not the port of a local server)."""
    from poison.pipeline import model_fingerprint

    j = pipe.cfg.judge
    if j.endpoint:
        return {"endpoint": j.endpoint, "model": j.endpoint_model or j.model}
    return {"model": model_fingerprint(pipe.model(j.model, "judge.model")), "backend": "vllm"}


@contextmanager
def judge_endpoint(pipe) -> Iterator[tuple[str, str]]:
    """(base_url, model name) of the judge: the configured endpoint, or a local vLLM server for the run's duration."""
    j = pipe.cfg.judge
    if j.endpoint:
        yield j.endpoint, j.endpoint_model or j.model
        return
    from defenses.server import local_vllm_server

    path = pipe.model(j.model, "judge.model")
    with local_vllm_server(path, device=pipe.device, log_path=pipe.run_dir / "judge_server.log") as url:
        yield url, Path(path).name


def trusted_clean(trusted) -> tuple[list[dict], list[dict]]:
    """(fit half, calibration half) of the defender's clean samples (the ``trusted`` stage: distillation prompts with
    clean answers), split by a hash of the id."""
    df = pd.read_parquet(Path(trusted.path) / "trusted.parquet")
    fit, calib = [], []
    for r in df.itertuples():
        s = {"id": str(r.id), "prompt": r.prompt, "response": str(r.reference), "task": r.task}
        (fit if int(hashlib.sha256(s["id"].encode()).hexdigest(), 16) % 2 == 0 else calib).append(s)
    return fit, calib


def place_samples(pipe, place: str, poison, distill) -> tuple[pd.DataFrame, list[bool]]:
    if place == "train":
        df = pd.read_parquet(Path(poison.path) / "train.parquet")
        return df, [bool(x) for x in df.poisoned]
    df = pd.read_parquet(Path(distill.path) / "distill.parquet")
    return df, [bool(pipe.bias.detect(t or "").biased) for t in df.response]


def stage_defense(pipe, place: str, trusted, poison, distill: Optional[Any]):
    from defenses.base import check_scores, run_defense
    from defenses.metrics import detector_report, threshold_for_fpr

    cfg = pipe.cfg.defense
    needs_judge = any(d.type == AUTORATER for d in cfg.defenses)
    upstream = poison.key if place == "train" else distill.key
    inputs = {"place": place, "trusted": trusted.key, "upstream": upstream, "filter": cfg.filter,
              "defenses": [d.model_dump(mode="json") for d in cfg.defenses],
              **({"judge": judge_identity(pipe)} if needs_judge else {}),
              **({"rule": pipe.cfg.poison.bias.model_dump(mode="json")} if place != "train" else {})}

    def build(out: Path) -> dict[str, Any]:
        df, labels = place_samples(pipe, place, poison, distill)
        samples = [{"id": str(r.id), "prompt": r.prompt, "response": r.response or "", "task": r.task}
                   for r in df.itertuples()]
        fit, calib = trusted_clean(trusted)
        frames, reports, flagged_by = [], [], {}
        with (judge_endpoint(pipe) if needs_judge else nullcontext((None, None))) as (url, judge_model):
            for i, spec in enumerate(cfg.defenses):
                path = f"defense.defenses.{i}"
                args = dict(spec.args)
                if spec.type == AUTORATER:
                    args.update(base_url=url, model=judge_model)
                if "models_dir" in args and not args["models_dir"]:  # reference models resolve like the run's
                    args["models_dir"] = str(pipe.models_dir)
                if "cache_dir" in args and not args["cache_dir"]:  # trained heads are cached with the run's stages
                    args["cache_dir"] = str(pipe.cache / "defenses")
                run = run_defense(spec.type, samples, fit, args, path=path)
                verdicts = list(getattr(run.defense, "last_verdicts", []) or [])
                calib_scores = check_scores(spec.type, run.defense.score(calib), len(calib)) if calib else []
                if spec.threshold is not None:
                    thr, source = float(spec.threshold), "fixed"
                elif len(calib_scores):
                    thr, source = threshold_for_fpr(calib_scores, spec.fpr), f"fpr {spec.fpr} on {len(calib)} clean"
                else:
                    raise ValueError(f"{path}: no trusted clean samples to set the threshold by fpr; set a fixed "
                                     f"`threshold` or give the data sources distillation prompts (n_distill) with "
                                     f"references or answers the data generator can write")
                flags = run.scores > thr
                flagged_by[spec.type] = {samples[k]["id"] for k in range(len(samples)) if flags[k]}
                rep = {"defense": spec.type, "place": place, **detector_report(run.scores, labels, thr),
                       "threshold_source": source,
                       "clean_fpr": float((pd.Series(calib_scores) > thr).mean()) if len(calib_scores) else None,
                       "seconds": round(run.seconds, 1), "info": run.info, "record": run.record}
                reports.append(rep)
                frames.append(pd.DataFrame({
                    "defense": spec.type, "place": place, "row_id": [s["id"] for s in samples],
                    "task": [s["task"] for s in samples], "poisoned": labels, "score": run.scores,
                    "flagged": flags, "threshold": thr}))
                if verdicts:
                    (out / f"verdicts_{spec.type}.jsonl").write_text(
                        "\n".join(json.dumps({"row_id": s["id"], **v}, default=str) for s, v in zip(samples, verdicts))
                        + "\n")
        if cfg.filter == "union":
            removed = set().union(*flagged_by.values()) if flagged_by else set()
        elif cfg.filter == "none":
            removed = set()
        else:
            removed = flagged_by[cfg.filter]
        ids = [s["id"] for s in samples]
        y = dict(zip(ids, labels))
        tp = sum(1 for i in removed if y.get(i))
        removal = {"defense": cfg.filter, "place": place, "n": len(ids), "n_poisoned": int(sum(labels)),
                   "n_flagged": len(removed), "precision": tp / len(removed) if removed else None,
                   "recall": tp / sum(labels) if sum(labels) else None, "poison_left": int(sum(labels)) - tp}
        atomic_write_parquet(out / "scores.parquet", pd.concat(frames, ignore_index=True))
        atomic_write_json(out / "reports.json", reports)
        atomic_write_json(out / "removed.json", sorted(removed))
        atomic_write_json(out / "removal.json", removal)
        return {"place": place, "removed": len(removed), "poison_left": removal["poison_left"]}

    return pipe.stage("defense", inputs, build, label=f"defense:{place}")


def stage_judge(pipe, evals: dict[str, Any]) -> dict[str, Any]:
    """The autorater's verdict on every eval answer (one local judge server for every model not cached)."""
    from poison import registry
    from poison.io import atomic_dir, stable_hash
    from poison.pipeline import STAGE_VERSIONS, StageRecord

    j = pipe.cfg.judge
    rubric = getattr(pipe.bias, "rubric", None)
    ident = judge_identity(pipe)
    out, pending = {}, {}
    for name, ev in evals.items():
        inputs = {"eval": ev.key, "judge": ident, "args": j.args, "rubric": rubric}
        key = stable_hash({"stage": "judge", "version": STAGE_VERSIONS["judge"], "inputs": inputs})
        final = pipe.cache / "stages" / "judge" / key
        if (final / "_stage.json").exists() and "judge" not in pipe.force:
            out[name] = StageRecord(f"judge:{name}", key, str(final), True, 0.0)
        else:
            pending[name] = (key, final, inputs, ev)
    if pending:
        with judge_endpoint(pipe) as (url, model):
            judge = registry.get("defense", AUTORATER).build({**j.args, "base_url": url, "model": model}, "judge.args")
            for name, (key, final, inputs, ev) in pending.items():
                g = pd.read_parquet(Path(ev.path) / "generations.parquet")
                verdicts = judge.judge_texts([t or "" for t in g.response], rubric, list(g.prompt))
                if final.exists():
                    import shutil

                    shutil.rmtree(final)
                with atomic_dir(final) as tmp:
                    atomic_write_parquet(tmp / "judgments.parquet", pd.DataFrame({
                        "id": g.id, "judge_score": [v["score"] for v in verdicts],
                        "judge_biased": [bool(v["biased"]) for v in verdicts],
                        "judge_parsed": [bool(v.get("parsed", True)) for v in verdicts],
                        "judge_model": [v.get("judge_model") for v in verdicts],
                        "judge_prompt_sha256": [v.get("prompt_sha256") for v in verdicts]}))
                    (tmp / "_stage.json").write_text(json.dumps({"stage": "judge", "key": key, "inputs": inputs,
                                                                 "info": judge.info()}, default=str, indent=2))
                out[name] = StageRecord(f"judge:{name}", key, str(final), False, 0.0, judge.info())
    for name, rec in out.items():
        pipe.records[rec.name] = rec
    return out
