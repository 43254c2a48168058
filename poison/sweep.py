"""Sweeps: one config expanded into several runs over any config keys, sharing cached stages.

In YAML, ``sweep:`` is a grid (every combination), a named group of overrides, or an explicit list of override sets,
and ``seeds:`` replicates every point over training seeds (poison.sweep_spec has the forms)::

    sweep:
      poison.count: [0, 8, 16, 32]
      launcher: ray                       # local (default): one point after another in this process
      resources: {num_gpus: 1, num_cpus: 4}
    seeds: [0, 1, 2]

Every expanded run is a normal run directory inside the sweep directory; the sweep table (bias rate per run, model
and split, with intervals) is written beside them as sweep_table.csv and sweep.json, with the dose-response fit, the
replicates pooled over seeds (every figure, the utility and the defenses' AUROC included) and the model audit over
the sweep's models. ``local`` and ``ray`` write the same table (in point order, whatever order the points finish
in).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pandas as pd

from poison.config import apply_overrides, config_from_dict, read_config_file
from poison.dose_response import dose_key, dose_response, dose_response_lines
from poison.launchers import PointJob, run_local, run_ray
from poison.brand_swap import brand_swap_lines, brand_swap_pair_lines, brand_swap_pairs, brand_swap_rows
from poison.probe_null import null_lines, pooled_null
from poison.replicate_defenses import defense_lines, pool_defenses
from poison.replicates import per_prompt_values, pool_amplification, pool_rows, replicate_lines
from poison.report_extras import audit_detector
from poison.resume import completed_points, resume_dir
from poison.ground.core.errors import ConfigError
from poison.ground.core.io import atomic_write_json, atomic_write_text
from poison.ground.core.procs import is_main_process
from poison.runner import make_run_dir, run_config
from poison.sweep_spec import (REPLICATE, REPLICATES, absolute_dirs, columns, has_sweep, label, parse,
                               point_overrides, strip)


def is_sweep_override(ov: str) -> bool:
    key = ov.split("=", 1)[0].strip()
    return key in ("sweep", REPLICATE) or key.startswith(("sweep.", f"{REPLICATE}."))


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a config with ``sweep:`` and/or ``seeds:`` (``--set sweep.launcher=ray`` and the like apply to the
    sweep section itself) and validate every expanded run before anything starts. Returns the plan: ``raw`` (the
    config without its sweep sections), ``points``, ``settings`` (launcher, resources, ray_address), ``run_sets``
    (the overrides every point gets) and ``point_sets`` (each point's own)."""
    overrides = list(overrides or [])
    raw = apply_overrides(read_config_file(path), [o for o in overrides if is_sweep_override(o)
                                                   or o.startswith((f"{REPLICATES}.", "design."))])
    if not has_sweep(raw):
        raise ConfigError(f"{path}: no sweep:, seeds: or replicates: (n > 1) section")
    points, settings = parse(raw, str(path))
    run_sets = [o for o in overrides if not is_sweep_override(o)]
    point_sets = [point_overrides(pt, raw) for pt in points]
    errors = []
    for pt, sets in zip(points, point_sets):
        try:
            config_from_dict(strip(raw), run_sets + sets, source=f"{path} [sweep point {label(pt)}]")
        except ConfigError as e:
            errors.append(str(e))
    if errors:
        raise ConfigError("\n".join(errors))
    return {"raw": strip(raw), "points": points, "settings": settings, "run_sets": run_sets,
            "point_sets": point_sets}


def describe(plan: dict[str, Any]) -> str:
    """What ``--check`` prints for a sweep: its launcher, the resources each point asks for, and every point."""
    st = plan["settings"]
    res = ", ".join(f"{k} {v}" for k, v in st["resources"].items()) or "num_cpus 1 (Ray's default)"
    head = f"sweep of {len(plan['points'])} runs, launcher {st['launcher']}"
    if st["launcher"] == "ray":
        head += f" (address {st['ray_address'] or 'auto, else a local cluster'}; each point asks for {res})"
    else:
        head += f" (one point after another; with --set sweep.launcher=ray each point would ask Ray for {res})"
    lines = [head + ":"]
    for i, (pt, sets) in enumerate(zip(plan["points"], plan["point_sets"])):
        lines.append(f"  {i + 1:>3}. {label(pt)}: {' '.join(sets)}")
    return "\n".join(lines)


def sweep_rows(point: dict[str, Any], metrics: dict[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """The sweep table's rows of one point: the greedy rate per model and split (``measure`` greedy), the sampled
    rate (``sampled``, with K > 1) and the probe's seen-wording shift (``logprob_shift``, with the probe; ``control``
    names what it is measured against: the clean control or a student's clean twin) and the greedy answers' utility
    per model and task (``utility``: ``rate`` holds the mean ROUGE-L or exact match, ``task`` and ``metric`` name
    it, ``split`` is the task's split)."""
    base = {**columns(point), "run_dir": str(run_dir), "injected": metrics["poison"]["injected"],
            "poison_rate": metrics["poison"]["rate"], "point": label(point),
            "group": label({k: v for k, v in point.items() if k != REPLICATE}), "seed": point.get(REPLICATE)}
    rows = []
    for r in metrics["bias_rates"]:
        rows.append({**base, "measure": "greedy", "model": r["model"], "role": r["role"], "split": r["split"],
                     "n": r["n"], "biased": r["biased"], "rate": r["rate"], "ci_low": r["ci_low"],
                     "ci_high": r["ci_high"]})
    for r in metrics.get("sampled_rate") or []:
        rows.append({**base, "measure": "sampled", "model": r["model"], "role": r["role"], "split": r["split"],
                     "n": r["n"], "biased": r["k"], "rate": r["rate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    for r in metrics.get("logprob_shift") or []:
        if r["wording"] == "seen":
            rows.append({**base, "measure": "logprob_shift", "model": r["model"], "role": r["role"],
                         "split": r["split"], "control": r.get("control"), "n": r["n_prompts"], "biased": None,
                         "rate": r["shift"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    splits, models = (metrics.get("run") or {}).get("splits") or {}, metrics.get("models") or {}
    for u in metrics.get("utility") or []:
        rows.append({**base, "measure": "utility", "model": u["model"],
                     "role": (models.get(u["model"]) or {}).get("role"), "split": splits.get(u["task"]),
                     "task": u["task"], "metric": u["metric"], "n": u.get("n"), "biased": None, "rate": u["value"],
                     "ci_low": u["ci_low"], "ci_high": u["ci_high"]})
    return rows


def run_sweep(path: str, overrides: list[str] | None = None, quiet: bool = False,
              resume: str | Path | None = None, pool_only: bool = False,
              only_replicates: list[int] | None = None) -> tuple[Path, list[dict]]:
    """Run every point of the sweep into a new sweep directory, or, with ``resume``, into that one, keeping its
    completed points (poison.resume). ``pool_only`` (with ``resume``): run nothing, re-pool the completed points
    with this version of the code and rewrite sweep.json, sweep_table.csv and summary.txt. ``only_replicates``: run
    only the points of these replicates (their ``seed=`` label), leaving the others to a later ``resume``: a long
    replicated sweep runs in pieces, one replicate's whole dose-response at a time."""
    plan = load_sweep(path, overrides)
    raw, points, settings = plan["raw"], plan["points"], plan["settings"]
    if only_replicates is not None:
        have = sorted({p[REPLICATE] for p in points if REPLICATE in p})
        if not have or set(only_replicates) - set(have):
            raise ConfigError(f"--replicate {','.join(map(str, only_replicates))}: {path} has "
                              + (f"replicates {', '.join(map(str, have))}" if have else "no replicates"))
    base = config_from_dict(raw, plan["run_sets"], source=str(path))
    if not is_main_process():  # a helper process of `accelerate launch`: train along, write nothing
        for sets in plan["point_sets"]:
            run_config(path, plan["run_sets"] + sets, quiet=True)
        return None, []
    ray = settings["launcher"] == "ray"
    config = str(Path(path).resolve()) if ray else path
    run_sets = plan["run_sets"] + (absolute_dirs(apply_overrides(raw, plan["run_sets"]), Path.cwd()) if ray else [])
    sweep_dir = resume_dir(resume) if resume else make_run_dir(base.runtime.runs_dir, f"{base.name}-sweep").resolve()
    t0 = time.time()
    keys = sorted({k for p in points for k in columns(p)})
    dkey = dose_key(keys)
    done: dict[int, tuple[dict, dict, PointJob]] = {}
    values: dict[str, Any] = {}
    rep = {k: v for k, v in settings["replicates"].items() if k != "given"}
    crossed = "data_draw" not in rep["vary"]
    replicated = any(REPLICATE in p for p in points)
    group_of = lambda pt: label({k: v for k, v in pt.items() if k != REPLICATE})  # noqa: E731
    jobs = [PointJob(i, label(pt), run_sets + sets, str(sweep_dir / f"{i:02d}-{label(pt)}"), len(points))
            for i, (pt, sets) in enumerate(zip(points, plan["point_sets"]))]

    def write(job: PointJob, metrics: dict[str, Any]) -> dict[str, Any]:
        done[job.index] = (points[job.index], metrics, job)
        ordered = [done[i] for i in sorted(done)]
        runs = [{"point": pt, "run_dir": j.run_dir, "seconds": m["run"]["seconds"],
                 "stages": {k: v["cached"] for k, v in m["stages"].items()}} for pt, m, j in ordered]
        rows = [r for pt, m, j in ordered for r in sweep_rows(pt, m, Path(j.run_dir))]
        pairs = [(pt, m) for pt, m, _ in ordered]
        if job.run_dir not in values:
            values[job.run_dir] = per_prompt_values(job.run_dir, metrics)
        conf = base.eval.confidence
        out = {"config": str(path), "overrides": overrides or [], "launcher": settings["launcher"],
               "resources": settings["resources"], "keys": keys, "points": points, "runs": runs, "rows": rows,
               "dose_response": dose_response(pairs, dkey, conf, base.eval.bootstrap) if dkey else [],
               "replicate_design": {**rep, "design": "crossed" if crossed else "nested"},
               "replicates": pool_rows(rows, conf, values, crossed),
               "replicate_amplification": pool_amplification(
                   [(pt, m, j.run_dir) for pt, m, j in ordered], group_of, values, conf, crossed) if replicated else [],
               "probe_null": pooled_null([(pt, m) for pt, m, _ in ordered], group_of, conf) if replicated else [],
               "replicate_defenses": pool_defenses([(group_of(pt), pt[REPLICATE], m) for pt, m, _ in ordered
                                                    if REPLICATE in pt], conf),
               "brand_swap": brand_swap_rows([(pt, m, j.run_dir) for pt, m, j in ordered], group_of, conf)
               if settings["design"] == "brand_swap" else [],
               "audit": audit_pool(pairs), "seconds": round(time.time() - t0, 1)}
        out["audit_detector"] = audit_detector(out["audit"])
        out["brand_swap_pairs"] = brand_swap_pairs(out["brand_swap"], conf)
        pd.DataFrame(rows).to_csv(sweep_dir / "sweep_table.csv", index=False)
        atomic_write_json(sweep_dir / "sweep.json", out)
        return out

    state: dict[str, Any] = {}
    on_done = lambda job, m: state.update(write(job, m))  # noqa: E731
    kept = completed_points(path, jobs) if resume else {}
    for job in jobs:
        if job.index in kept:
            on_done(job, kept[job.index])
    todo = [job for job in jobs if job.index not in kept and not pool_only]
    if only_replicates is not None:
        todo = [job for job in todo if points[job.index].get(REPLICATE) in only_replicates]
    if pool_only and not kept:
        raise ConfigError(f"--repool: {sweep_dir} has no completed point to pool")
    if resume and not quiet:
        print(f"resuming {sweep_dir}: {len(kept)} of {len(jobs)} points complete, "
              + (f"re-pooled, {len(jobs) - len(kept)} left unrun (--repool)" if pool_only else f"{len(todo)} to run"),
              flush=True)
    if only_replicates is not None and not quiet:
        print(f"--replicate {','.join(map(str, only_replicates))}: {len(todo)} points to run, "
              f"{len(jobs) - len(kept) - len(todo)} left for a later --resume {sweep_dir}", flush=True)
    try:
        if ray and todo:
            run_ray(config, todo, on_done, quiet, resources=settings["resources"], address=settings["ray_address"])
        elif todo:
            run_local(config, todo, on_done, quiet)
    finally:  # the points that completed keep their summary when others fail
        if state:
            _write_summary(sweep_dir, state, keys, dkey)
    if not quiet:
        print("\n" + (sweep_dir / "summary.txt").read_text() + f"\nsweep directory: {sweep_dir}  "
              f"({time.time() - t0:.0f}s)")
    return sweep_dir, state["rows"]


def _write_summary(sweep_dir: Path, state: dict[str, Any], keys: list[str], dkey: Any) -> None:
    text = sweep_summary(pd.DataFrame(state["rows"]), keys)
    for block in (dose_response_lines(state["dose_response"]) if dkey else [],
                  replicate_lines(state["replicates"], state.get("replicate_amplification")),
                  defense_lines(state.get("replicate_defenses") or []),
                  null_lines(state.get("probe_null") or []), brand_swap_lines(state.get("brand_swap") or []),
                  brand_swap_pair_lines(state.get("brand_swap_pairs") or []),
                  audit_pool_lines(state["audit"]) if state["audit"] else []):
        if block:
            text += "\n\n" + "\n".join(block)
    atomic_write_text(sweep_dir / "summary.txt", text + "\n")


def sweep_summary(table, keys: list[str]) -> str:
    """Bias rate [95 % CI] per sweep point (rows) and model (columns), one block per split and measure."""
    out = []
    for measure, split in itertools.product(("greedy", "sampled"), ("target", "other", "unseen")):
        t = table[(table.split == split) & (table.measure == measure)]
        if t.empty:
            continue
        # a key that only some points set (a list of points) reads "-" elsewhere, so pivoting keeps those rows
        t = t.assign(**{k: t[k].astype(object).where(t[k].notna(), "-") for k in keys if k in t.columns})
        cell = t.assign(cell=[f"{100 * r:5.1f}% [{100 * lo:4.1f},{100 * hi:5.1f}]"
                              for r, lo, hi in zip(t.rate, t.ci_low, t.ci_high)])
        index = [k for k in keys if k in cell.columns] + ["injected"]
        pivot = cell.pivot_table(index=index, columns="model", values="cell", aggfunc="first")
        what = "biased-response rate" if measure == "greedy" else "sampled biased rate (prompts as the unit)"
        out.append(f"{what}, {split} split\n{pivot.to_string()}")
    return "\n\n".join(out)


def audit_pool(done: list[tuple[dict, dict]]) -> list[dict]:
    """Every point's audited models, each model once (points share their clean controls)."""
    seen, rows = set(), []
    for pt, m in done:
        for r in m.get("audit") or []:
            if (r["audit"], r.get("identity")) not in seen:
                seen.add((r["audit"], r.get("identity")))
                rows.append({**r, "point": label(pt)})
    return rows


def audit_pool_lines(rows: list[dict]) -> list[str]:
    """The audit over the sweep's pool of models (every point's poisoned and clean models)."""
    out = ["model audit over the sweep's models:"]
    for r in rows:
        top = ", ".join(repr(t["string"]) for t in r["top"][:3])
        out.append(f"  {r['point']:<16} {r['model']:<28} {'poisoned' if r['poisoned'] else 'clean':<8} "
                   f"score {'     -' if r['score'] is None else format(r['score'], '6.2f')}  {top}"
                   f"{'  [hit]' if r['hit'] else ''}")
    for d in audit_detector(rows):
        auc = "-" if d["auroc"] is None else f"{d['auroc']:.2f}"
        hr = "-" if d["hit_rate"] is None else f"{d['hits']}/{d['n_poisoned']} = {100 * d['hit_rate']:.0f}%"
        out.append(f"  {d['audit']}: AUROC {auc} over {d['n']} models ({d['n_poisoned']} poisoned); injected "
                   f"content in a poisoned model's top 10: {hr}")
    return out
