"""The audit stage: every configured model audit (``audit.audits``) run on every trained model of the run against its
public base (the teacher's and the students' ``model``), with neutral probe prompts: ``audit.prompts`` of the
distillation prompts, across tasks (never an eval prompt). One artifact per (audit, model)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from poison.ground.core import registry
from poison.ground.core.artifacts import read_parquet
from poison.ground.core.io import stable_hash
from poison.ground.engines.models import model_identity
from poison.ground.results.model_id import split_stage_label, stage_label
from poison.stages import Run
from poison.stages.engine import ready
from poison.stages.plugins import plugin_entries
from poison.stages.protocol import StageRecord, stage

AUDIT = stage("audit", 1, ("model", "base"),
              doc="a model audit's verdict on one model against its base (no training data needed)")


def audit_prompts(run: Run, data: StageRecord) -> list[str]:
    df = read_parquet(Path(data.path) / "rows.parquet")
    prompts = sorted(df[df.split == "distill"].prompt)
    random.Random(f"audit:{run.cfg.seed}").shuffle(prompts)
    return prompts[: run.cfg.audit.prompts]


def audited(models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The models an audit looks at: every trained one (the untouched base model is what they are compared to)."""
    return {n: m for n, m in models.items() if m.get("base_model") and m.get("kind") != "base"}


def stage_audit(run: Run, models: dict[str, dict[str, Any]], data: StageRecord) -> dict[str, StageRecord]:
    """``{"<audit>:<model>": record}``; each record's folder holds ``audit.json`` (score, top strings, info)."""
    prompts = audit_prompts(run, data)
    targets = audited(models)
    out: dict[str, StageRecord] = {}
    for i, spec in enumerate(run.cfg.audit.audits):
        plugin = registry.get("audit", spec.type).build(spec.args, f"audit.audits.{i}.args", run.ctx)
        bases = {n: run.ctx.model(m["base_model"], f"{n} base", m.get("base_revision")) for n, m in targets.items()}
        entries = {stage_label("audit", spec.type, n): {"model": m["identity"], "base": model_identity(bases[n]),
                                              "audit": spec.model_dump(mode="json"),
                                              "prompts": stable_hash(prompts), "device": run.ctx.device,
                                              "dtype": run.ctx.dtype,
                                              **plugin_entries(run, [("audit", spec.type)])}
                   for n, m in targets.items()}

        def compute(tmps: dict[str, Path], spec=spec, plugin=plugin, bases=bases):
            res = {}
            for label, tmp in tmps.items():
                name = split_stage_label(label, 2)[2]
                t0 = time.time()
                result = plugin.run(ready(run, targets[name]), bases[name], prompts)
                (tmp / "audit.json").write_text(json.dumps({"model": name, "audit": spec.type, **result},
                                                           indent=1, default=str))
                res[label] = ({"score": result["score"], "top": [t["string"] for t in result["top"][:3]]},
                              time.time() - t0)
            return res

        out.update(run.cache.run_many(AUDIT, entries, compute))
    return out
