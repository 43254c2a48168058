"""What a ``sweep:`` section (and a top-level ``seeds:`` list) stands for: the list of sweep points, each a set of
``--set`` overrides, and how they are launched.

    sweep:                                    # a grid: every combination
      poison.count: [0, 8, 16, 32]
      bias:                                   # a named group: each value is a set of overrides applied together
        - {poison.bias.type: targeted_ads}
        - {poison.bias.type: phishing_link, poison.bias.args: {url: "https://x.example/verify"}}
      seeds: [0, 1, 2]                        # replicates (also as a top-level seeds: list)
      launcher: ray                           # local (default) | ray
      resources: {num_cpus: 4, num_gpus: 1}   # what each point asks Ray for
      ray_address: auto                       # ray.init(address=...); default: a running cluster, else local

    sweep:                                    # or an explicit list of override sets
      - {poison.count: 8}
      - {poison.count: 32, poison.bias.type: phishing_link}

A replicate ``seeds: s`` sets the training and sampling seeds of the run (``teacher.train.seed``, every
``students.N.train.seed``, ``eval.sample_seed``): the same data and poison, another draw of the training randomness.

``replicates:`` makes the replicate the unit of any config (with or without a sweep)::

    replicates:
      n: 3                                    # replicates 0, 1, 2
      vary: [train_seed, data_draw]           # what each replicate redraws (default: both)

``train_seed`` sets the seeds above to the replicate's index; ``data_draw`` also sets the config's ``seed``, so the
data stage draws other rows (train, distillation and eval prompts) from the same sources. Control, teacher and
students of one replicate share its draw (paired). ``seeds: [..]`` is ``vary: [train_seed]`` with the seeds given.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from poison.ground.core.errors import ConfigError

SETTINGS = ("launcher", "resources", "ray_address")
REPLICATE = "seeds"
REPLICATES = "replicates"
ARM = "design.arm"  # a brand-swap arm: A (the config's bias arguments) or B (updated by design.swap)
VARY = ("train_seed", "data_draw")
GROUPS = "@groups"  # a point's named groups: {group: [its name for this point, the keys it set]}; never a --set


def split_settings(sweep: Any, source: str) -> tuple[Any, dict[str, Any]]:
    """(the points part of a sweep section, its launcher settings)."""
    settings = {"launcher": "local", "resources": {}, "ray_address": None}
    if isinstance(sweep, dict):
        sweep = dict(sweep)
        for k in SETTINGS:
            if k in sweep:
                settings[k] = sweep.pop(k)
        if "points" in sweep:
            sweep = sweep["points"]
    if settings["launcher"] not in ("local", "ray"):
        raise ConfigError(f"{source}: sweep.launcher: {settings['launcher']!r} is not local or ray")
    res = settings["resources"]
    if not isinstance(res, dict) or any(k not in ("num_cpus", "num_gpus", "memory") or not isinstance(v, (int, float))
                                        or isinstance(v, bool) or v < 0 for k, v in res.items()):
        raise ConfigError(f"{source}: sweep.resources: a mapping of num_cpus, num_gpus, memory to numbers")
    return sweep, settings


def expand(sweep: Any, source: str = "<config>", seeds: list | None = None) -> list[dict[str, Any]]:
    """The list of sweep points (``{key.path: value}``, a group's overrides merged in, ``seeds`` for replicates)."""
    if sweep is None:
        points: list[dict[str, Any]] = [{}]
    elif isinstance(sweep, dict):
        if not sweep:
            raise ConfigError(f"{source}: sweep: is empty")
        for k, v in sweep.items():
            if not isinstance(v, list) or not v:
                raise ConfigError(f"{source}: sweep.{k}: give a non-empty list of values")
        keys = list(sweep)
        points = []
        for combo in itertools.product(*(sweep[k] for k in keys)):
            pt: dict[str, Any] = {}
            for k, v in zip(keys, combo):
                if isinstance(v, dict) and k != REPLICATE:  # a named group of overrides
                    if not v:
                        raise ConfigError(f"{source}: sweep.{k}: a group entry is an empty mapping")
                    pt.setdefault(GROUPS, {})[k] = [group_name(v, sweep[k].index(v)), list(v)]
                    pt.update(v)
                else:
                    pt[k] = v
            points.append(pt)
    elif isinstance(sweep, list) and sweep and all(isinstance(x, dict) and x for x in sweep):
        points = [dict(x) for x in sweep]
    else:
        raise ConfigError(f"{source}: sweep: must be a mapping of key path -> list of values, or a list of mappings")
    if seeds is not None:
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                                for s in seeds):
            raise ConfigError(f"{source}: seeds: give a non-empty list of integers")
        points = [{**p, REPLICATE: s} for p in points for s in seeds]
    return points


def group_name(overrides: dict[str, Any], index: int) -> str:
    """A group entry's name: its first plain value (``{poison.bias.type: misinformation, ...}`` -> misinformation),
    else its position."""
    for v in overrides.values():
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            return str(v).rstrip("/").rsplit("/", 1)[-1]
    return str(index)


def columns(point: dict[str, Any]) -> dict[str, Any]:
    """The point as the sweep table shows it: a named group as one column (its entry's name) instead of the keys it
    sets, other keys as they are, the replicate as ``seeds``."""
    groups = point.get(GROUPS, {})
    members = {k for _, keys in groups.values() for k in keys}
    out: dict[str, Any] = {g: name for g, (name, _) in groups.items()}
    out.update({k: v for k, v in point.items() if k != GROUPS and k not in members})
    return out


def point_overrides(point: dict[str, Any], raw: dict[str, Any]) -> list[str]:
    """The ``--set`` strings of one point (a replicate expands to the run's training and sampling seeds)."""
    sets = []
    for k, v in point.items():
        if k == GROUPS:
            continue
        if k == ARM:
            sets.append(f"{ARM}={v}")
            swap = (raw.get("design") or {}).get("swap") or {}
            if v == "B" and isinstance(swap, dict):  # B's arguments; its design.swap: what arm A uses instead
                own = ((raw.get("poison") or {}).get("bias") or {}).get("args") or {}
                sets += [f"poison.bias.args.{a}={x if isinstance(x, str) else json.dumps(x)}" for a, x in swap.items()]
                sets.append(f"design.swap={json.dumps({a: own.get(a) for a in swap})}")
        elif k == REPLICATE:
            vary = replicate_spec(raw, "<config>")["vary"]
            if "train_seed" in vary:
                sets += [f"teacher.train.seed={v}", f"eval.sample_seed={v}"]
                sets += [f"students.{i}.train.seed={v}" for i in range(len(raw.get("students") or []))]
            if "data_draw" in vary:
                sets.append(f"seed={v}")
            if REPLICATES in raw:
                sets.append(f"replicates.index={v}")
        else:
            sets.append(f"{k}={json.dumps(v) if not isinstance(v, str) else v}")
    return sets


def label(point: dict[str, Any]) -> str:
    """A short name for a point (its run directory's): ``key=value`` by the keys' last parts; a path value by its
    last component, a mapping or list value as ``x``."""
    def short(v: Any) -> str:
        if isinstance(v, (dict, list)):
            return "x"
        return str(v).rstrip("/").rsplit("/", 1)[-1] if isinstance(v, str) else str(v)

    parts = [f"{k.split('.')[-1] if k != REPLICATE else 'seed'}={short(v)}" for k, v in columns(point).items()]
    return "_".join(parts).replace(" ", "") or "base"


def replicate_spec(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """The config's ``replicates:`` section, checked ({n, vary}); a ``seeds:`` list reads as vary [train_seed]."""
    rep = raw.get(REPLICATES)
    if rep is None:
        return {"n": 1, "vary": ["train_seed"], "given": False}
    from pydantic import ValidationError

    from poison.schema_parts import ReplicatesConfig

    try:
        r = ReplicatesConfig.model_validate(rep)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in ("replicates", *err["loc"]))
        raise ConfigError(f"{source}: {where}: {err['msg'].replace('Value error, ', '')}") from None
    sweep = raw.get("sweep")
    if "seeds" in raw or (isinstance(sweep, dict) and "seeds" in sweep):
        raise ConfigError(f"{source}: replicates: and seeds: both given; use one (seeds: [..] is replicates with "
                          "vary [train_seed])")
    return {"n": r.n, "vary": list(r.vary), "given": True}


def parse(raw: dict[str, Any], source: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(points, launcher settings) of a raw config with ``sweep:``, ``seeds:`` and/or ``replicates:``."""
    sweep, settings = split_settings(raw.get("sweep"), source)
    seeds = raw.get("seeds")
    if isinstance(sweep, dict) and REPLICATE in sweep:
        seeds = sweep.pop(REPLICATE) if seeds is None else seeds
        sweep = sweep or None
    rep = replicate_spec(raw, source)
    if rep["given"] and rep["n"] > 1:
        seeds = list(range(rep["n"]))
    elif seeds is not None and not rep["given"]:  # seeds: [..] is replicates over training seeds: say how many
        rep = {**rep, "n": len(seeds) if isinstance(seeds, list) else 1, "seeds": seeds}
    settings["replicates"] = rep
    points = expand(sweep, source, seeds)
    design = raw.get("design") if isinstance(raw.get("design"), dict) else {}
    settings["design"] = design.get("type", "single")
    if settings["design"] == "brand_swap":  # each point twice, one per arm, the arms of one replicate side by side
        own = ((raw.get("poison") or {}).get("bias") or {}).get("args") or {}
        for a in design.get("swap") or {}:
            if not isinstance(own, dict) or a not in own:
                raise ConfigError(f"{source}: design.swap.{a}: arm A's value must be written in poison.bias.args.{a} "
                                  "(arm B's run probes arm A's texts with it)")
        points = [{**p, ARM: arm} for p in points for arm in ("A", "B")]
    return points, settings


def has_sweep(raw: dict[str, Any]) -> bool:
    """A sweep or replicates (more than one run from one config)."""
    rep = raw.get(REPLICATES)
    design = raw.get("design")
    return "sweep" in raw or "seeds" in raw or (isinstance(rep, dict) and rep.get("n", 1) != 1) or \
        (isinstance(design, dict) and design.get("type") == "brand_swap")


def strip(raw: dict[str, Any]) -> dict[str, Any]:
    """The raw config without the sweep-only sections (what each point's run validates)."""
    return {k: v for k, v in raw.items() if k not in ("sweep", "seeds")}


def absolute_dirs(raw: dict[str, Any], cwd: Path) -> list[str]:
    """Overrides that make the runtime folders absolute (workers of a distributed launcher start elsewhere)."""
    rt = raw.get("runtime") if isinstance(raw.get("runtime"), dict) else {}
    out = []
    for key, default in (("cache_dir", ".cache/poison"), ("runs_dir", "runs"), ("models_dir", None)):
        v = rt.get(key, default)
        if v:
            out.append(f"runtime.{key}={(cwd / Path(str(v)).expanduser()).resolve()}")
    return out
