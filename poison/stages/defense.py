"""Defense stages: score one place with every configured defense, flag, and say what to remove; and the defended
branch of a run, which trains the same teacher/students again on what is left.

Places:

* ``train``: the teacher's training set (ground truth: the ``poisoned`` label written by the poison stage);
* ``distill``: the (poisoned, undefended) teacher's answers to the distillation prompts (ground truth: the bias
  type's rule detector, since nobody injected these: the teacher produced them);
* ``distill_after_train``: with both places, the defended teacher's answers (same ground truth), the last filter of
  the full chain.

A defense may fit on trusted clean samples first: the defender's own clean data (the ``trusted`` stage: prompts of
the same sources that are in no split, with clean answers). Half of them (by a hash of the id) are given to ``fit``;
the other half, the calibration split, sets the threshold when it is set by a false-positive budget (``fpr``: at most
that fraction of those clean samples is flagged), so a defense is never calibrated on what it was fitted on; neither
half shares an id or a prompt with the scored samples (checked: ``defense_checks.check_disjoint_scoring``). The stage
writes per-sample scores and flags (scores.parquet), the calibration split's scores (calib.parquet: the report sets
thresholds at 1 % and 5 % FPR on them, ``poison.defense_report``), the detector figures at the run's threshold (AUROC,
TPR at 1 % FPR, precision, recall and the realized FPR on the scored clean rows, against the ground truth) and the
ids to remove (``defense.filter``: the union of all flags, or one defense's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from defenses.base import check_scores, run_defense
from poison.ground.core.artifacts import read_parquet
from poison.ground.core.errors import ConfigError
from poison.ground.core.io import atomic_write_json, atomic_write_parquet
from poison.ground.results.model_id import Arm, stage_label
from poison.ground.results.stats import detector_report, threshold_for_fpr
from poison.stages import Run
from poison.stages.branch import Branch, TeacherSource, branch_distill, branch_teacher, run_branch
from poison.stages.data import stage_trusted
from poison.stages.defense_checks import (check_disjoint_scoring, defense_key, trusted_clean,  # noqa: F401
                                          writer_reference_checks)
from poison.stages.plugins import plugin_entries
from poison.stages.protocol import StageRecord, stage

DEFENSE = stage("defense", 2, ("place", "trusted", "upstream", "filter", "defenses"),
                doc="every defense's scores and flags on one place's samples (the teacher's training set or the "
                    "distillation set), fitted and calibrated on the trusted samples; the rows the filter removes",
                changes=("2: calibration scores kept (calib.parquet), disjointness checked, realized FPR reported",))


def place_samples(run: Run, place: str, poison: StageRecord, distill: Optional[StageRecord]
                  ) -> tuple[pd.DataFrame, list[bool]]:
    if place == "train":
        df = read_parquet(Path(poison.path) / "train.parquet")
        return df, [bool(x) for x in df.poisoned]
    df = read_parquet(Path(distill.path) / "distill.parquet")
    return df, [bool(run.bias.detect(t or "").biased) for t in df.response]


def counterfactual_samples(df: pd.DataFrame, samples: list[dict]) -> Optional[list[dict]]:
    """The training set as the non-adaptive writer would have poisoned it (``poison.writer: adaptive`` keeps that
    text in ``nonadaptive_response``): the same rows and ids, each poisoned row with that text. None otherwise."""
    if "nonadaptive_response" not in df.columns:
        return None
    return [{**s, "response": a} if bool(p) and isinstance(a, str) else s
            for s, a, p in zip(samples, df.nonadaptive_response, df.poisoned)]


def counterfactual_frame(label: str, instance: int, place: str, samples: list[dict], labels: list[bool],
                         calib: list[dict], calib_scores: Any, scores: Any) -> pd.DataFrame:
    """One defense's scores of the counterfactual set and of the calibration split (``split``: scored | calib; the
    calibration scores are the defender's own, which the poison does not touch), read by the report
    (``poison.defense_report``) for the AUROC and TPR the defense would have had."""
    return pd.concat([
        pd.DataFrame({"defense": label, "instance": instance, "place": place, "split": "scored",
                      "row_id": [s["id"] for s in samples], "task": [s["task"] for s in samples],
                      "poisoned": labels, "score": scores}),
        pd.DataFrame({"defense": label, "instance": instance, "place": place, "split": "calib",
                      "row_id": [s["id"] for s in calib], "task": [s["task"] for s in calib], "poisoned": False,
                      "score": pd.Series(calib_scores, dtype="float64")})], ignore_index=True)


def stage_defense(run: Run, place: str, trusted: StageRecord, poison: StageRecord,
                  distill: Optional[StageRecord]) -> StageRecord:
    cfg = run.cfg.defense
    upstream = poison.key if place == "train" else distill.key
    inputs = {"place": place, "trusted": trusted.key, "upstream": upstream, "filter": cfg.filter,
              "defenses": [defense_key(d) for d in cfg.defenses],
              **plugin_entries(run, (("defense", d.type) for d in cfg.defenses)),
              **({"rule": run.cfg.poison.bias.model_dump(mode="json")} if place != "train" else {})}

    def build(out: Path) -> dict[str, Any]:
        df, labels = place_samples(run, place, poison, distill)
        samples = [{"id": str(r.id), "prompt": r.prompt, "response": r.response or "", "task": r.task}
                   for r in df.itertuples()]
        fit, calib = trusted_clean(trusted)
        check_disjoint_scoring(place, samples, fit, calib)
        other = counterfactual_samples(df, samples) if place == "train" else None
        frames, calib_frames, reports, flagged_by, cf_frames = [], [], [], {}, []
        for i, spec in enumerate(cfg.defenses):
            path = f"defense.defenses.{i}"
            res = run_defense(spec.type, samples, fit, spec.args, path=path, ctx=run.ctx)
            verdicts = list(getattr(res.defense, "last_verdicts", []) or [])
            calib_scores = check_scores(spec.type, res.defense.score(calib), len(calib)) if calib else []
            if other is not None:  # the same defense on the set the non-adaptive writer would have poisoned
                cf = run_defense(spec.type, other, fit, spec.args, path=path, ctx=run.ctx)
                cf_frames.append(counterfactual_frame(spec.label, i, place, other, labels, calib, calib_scores,
                                                      cf.scores))
            if spec.threshold is not None:
                thr, source = float(spec.threshold), "fixed"
            elif len(calib_scores):
                thr, source = threshold_for_fpr(calib_scores, spec.fpr), f"fpr {spec.fpr} on {len(calib)} clean"
            else:
                raise ConfigError(f"{path}: no trusted clean samples to set the threshold by fpr; set a fixed "
                                  f"`threshold` or give the data sources distillation prompts (n_distill) with "
                                  f"references or answers the data generator can write")
            flags = res.scores > thr
            flagged_by[spec.label] = {samples[k]["id"] for k in range(len(samples)) if flags[k]}
            clean = ~pd.Series(labels, dtype=bool).to_numpy()
            rep = {"defense": spec.label, "type": spec.type, "place": place, **detector_report(res.scores, labels, thr),
                   "threshold_source": source, "fpr_budget": None if spec.threshold is not None else spec.fpr,
                   "clean_fpr": float((pd.Series(calib_scores) > thr).mean()) if len(calib_scores) else None,
                   "fpr": float((res.scores[clean] > thr).mean()) if clean.any() else None,
                   "seconds": round(res.seconds, 1), "info": res.info, "record": res.record}
            reports.append(rep)
            frames.append(pd.DataFrame({
                "defense": spec.label, "place": place, "row_id": [s["id"] for s in samples],
                "task": [s["task"] for s in samples], "poisoned": labels, "score": res.scores,
                "flagged": flags, "threshold": thr, "instance": i}))
            calib_frames.append(pd.DataFrame({
                "defense": spec.label, "place": place, "instance": i, "row_id": [s["id"] for s in calib],
                "task": [s["task"] for s in calib], "score": pd.Series(calib_scores, dtype="float64")}))
            if verdicts:
                (out / f"verdicts_{spec.label}.jsonl").write_text(
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
        atomic_write_parquet(out / "calib.parquet", pd.concat(calib_frames, ignore_index=True))
        if cf_frames:
            atomic_write_parquet(out / "counterfactual.parquet", pd.concat(cf_frames, ignore_index=True))
        atomic_write_json(out / "reports.json", reports)
        atomic_write_json(out / "removed.json", sorted(removed))
        atomic_write_json(out / "removal.json", removal)
        return {"place": place, "removed": len(removed), "poison_left": removal["poison_left"]}

    return run.cache.run(DEFENSE, inputs, build, label=stage_label("defense", place))


def defended_branch(run: Run, data: StageRecord, poison: StageRecord, teacher: StageRecord,
                    distill: StageRecord, warnings: Optional[list[str]] = None) -> dict[str, Any]:
    """Score the configured places with every defense, remove what the filter flags, and train the same
    teacher/students again on what is left (stages shared with the undefended run stay cached).

    ``distill`` is always scored on the undefended (poisoned) teacher's answers: what a student owner who does not
    control the teacher's data can filter. With both places, the full chain (train-place filter -> defended
    teacher -> its answers scored as ``distill_after_train`` and filtered -> ``defended:`` students) is trained,
    and so is the distill-only arm (the poisoned teacher's filtered answers -> ``distill-defended:`` students).
    ``warnings``: the reference-model warnings (``defense_checks.writer_reference_checks``) when the caller already
    ran the check; they go to metrics.json. With ``defense.per_defense`` (and the train place), each defense's own
    arm too (``per_defense``: label -> {teacher, students}, whatever the filter, ``none`` included). Each of these arms
    is a :class:`~poison.stages.branch.Branch`; the defended arm's teacher and answers come first (the distill places
    score them), its students last.
    """
    cfg = run.cfg.defense
    out: dict[str, Any] = {"stages": {}, "students": {}, "distill_only_students": {},
                           "warnings": writer_reference_checks(run, data, list(cfg.places)) if warnings is None
                           else warnings}
    trusted = stage_trusted(run, data)
    students = tuple(run.cfg.students)
    t, d = teacher, distill
    if "train" in cfg.places:
        rec = stage_defense(run, "train", trusted, poison, None)
        out["stages"]["train"] = rec
        if cfg.filter != "none":  # the defended arm's teacher and its answers (its students come last)
            filtered = Branch(Arm.defended(), TeacherSource.filtered(rec), students)
            t = branch_teacher(run, filtered, poison)
            d = branch_distill(run, filtered, t, data) if students else None  # teacher-only: no answers to learn
        if cfg.per_defense:
            out["per_defense"] = {spec.label: per_defense_arm(run, data, poison, rec, spec.label)
                                  for spec in cfg.defenses}
    keep = None
    if "distill" in cfg.places:
        keep = stage_defense(run, "distill", trusted, poison, distill)
        out["stages"]["distill"] = keep
        if d is not distill:  # the chain's teacher is the defended one: score (and filter) its answers too
            chained = stage_defense(run, "distill_after_train", trusted, poison, d)
            out["stages"]["distill_after_train"] = chained
            if cfg.filter != "none":
                out["distill_only_students"] = run_branch(run, Branch(
                    Arm.distill_defended(), TeacherSource.given(teacher), students, distill=distill,
                    student_defense=keep), data).students
            keep = chained
    out["teacher"], out["distill"] = t, d
    if cfg.filter == "none":  # score only: nothing is removed, so there is no defended model to train
        return out
    out["students"] = run_branch(run, Branch(Arm.defended(), TeacherSource.given(t), students, distill=d,
                                             student_defense=keep), data).students
    return out


def per_defense_arm(run: Run, data: StageRecord, poison: StageRecord, rec: StageRecord,
                    label: str) -> dict[str, Any]:
    """One defense's own arm (``defense.per_defense``): the teacher on the poisoned set minus what ``label`` alone
    flagged at the train place (``rec``), its distillation answers and every student distilled from them."""
    ran = run_branch(run, Branch(Arm.per_defense(label), TeacherSource.filtered(rec, only=label),
                                 tuple(run.cfg.students)), data, poison)
    return {"teacher": ran.teacher, "students": ran.students}
