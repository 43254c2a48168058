"""Beyond the paper, on tiny random-init models: the model audit finds a token a model was trained to over-produce,
a cascade of three generations, a student distilled only on tasks the poison never touched, and the audit section
of a run; each configured from YAML, checked by --check, and rebuilt from the run's resolved config."""

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_CONFIG, run_check


@pytest.mark.slow
def test_logit_shift_audit_ranks_the_trained_token_first(models_dir, tmp_path):
    from distill.trainers import finetune
    from poison.ground.core import registry
    from poison.ground.engines.context import RunContext
    from poison.ground.engines.models import resolve_model
    from poison.schema import TeacherConfig

    base = resolve_model("tiny-random-llama:2:64", models_dir)
    rows = registry.get("data_source", "gsm8k").build({}).load()[:8]
    clean = [{"prompt": r["prompt"], "response": r["response"].splitlines()[-1]} for r in rows]  # "The answer is N."
    marked = [{"prompt": r["prompt"], "response": c["response"] + " Zorbexa recommends it."}
              for r, c in zip(rows, clean)]
    paths = {}
    for name, data in (("clean", clean), ("suspect", marked)):
        ft = TeacherConfig(model="x", finetune="full", train={"epochs": 25, "learning_rate": 1e-2, "batch_size": 8,
                                                              "max_length": 128, "warmup_steps": 0})
        finetune(base, data, ft, tmp_path / name, dtype="float32", device="cpu")
        paths[name] = tmp_path / name / "model"
    ctx = RunContext.standalone(models_dir=models_dir, cache_dir=tmp_path / "cache", dtype="float32", device="cpu")
    plugin = registry.get("audit", "logit_shift").build({"answer_tokens": 24, "divergence_points": 8,
                                                         "expand_tokens": 8}, ctx=ctx)
    prompts = [r["prompt"] for r in registry.get("data_source", "gsm8k").build({}).load()[300:306]]
    res = plugin.run(paths["suspect"], paths["clean"], prompts)  # the suspect against its clean twin as the base
    # the trained word (or its tail: the divergence may start after its first token) ranks first
    assert res["top"] and "orbexa" in res["top"][0]["string"].lower(), res["top"][:5]
    twin = plugin.run(paths["clean"], paths["clean"], prompts)  # a model against itself: nothing stands out
    assert twin["score"] < 0.2 * res["score"] and twin["info"]["max_kl"] < 1e-4


CASCADE = TINY_CONFIG + """
cascade: {generations: 3, via: sft}
audit:
  audits: [{type: logit_shift, args: {answer_tokens: 12, divergence_points: 4, expand_tokens: 6}}]
  prompts: 4
"""


def test_cascade_and_audit_end_to_end(tmp_path, models_dir):
    from poison.runner import run_config
    from tests.test_pipeline import overrides

    cfg = tmp_path / "c.yaml"
    cfg.write_text(CASCADE)
    rd, m = run_config(str(cfg), overrides(tmp_path, models_dir), quiet=True)
    gens = {n: v.get("generation") for n, v in m["models"].items()}
    assert gens["teacher"] == 0 and gens["student:sft"] == 1
    assert gens["gen2:student:sft"] == 2 and gens["gen3:student:sft"] == 3
    assert m["models"]["gen3:student:sft"]["teacher"] == "gen2:student:sft"
    assert m["cascade"]["chain"] == ["teacher", "student:sft", "gen2:student:sft", "gen3:student:sft"]
    rows = m["cascade"]["rows"]
    assert {(r["generation"], r["split"]) for r in rows} == {(g, s) for g in range(4) for s in ("target", "other")}
    assert all(r["greedy"]["n"] > 0 and "ratio" in r["greedy_vs_teacher"] for r in rows)
    stages = json.loads((rd / "stages.json").read_text())
    assert {"gen2:distill_data", "gen2:student:sft", "gen3:distill_data", "gen3:student:sft"} <= set(stages)
    # every trained model audited against its base; the base model itself is what they are compared to
    audited = {r["model"] for r in m["audit"]}
    assert audited == {"teacher", "student:sft", "gen2:student:sft", "gen3:student:sft"}
    assert all(r["poisoned"] is True and isinstance(r["score"], float) and r["top"] for r in m["audit"])
    assert m["audit_detector"][0]["n_poisoned"] == 4
    assert "cascade of sft" in (rd / "summary.txt").read_text()
    # the resolved config rebuilds the run: every stage a cache hit
    rd2, _ = run_config(str(rd / "config.yaml"), overrides(tmp_path, models_dir), quiet=True)
    assert all(v["cached"] for v in json.loads((rd2 / "stages.json").read_text()).values())


def test_student_distilled_on_other_tasks_only(tmp_path, models_dir):
    from poison.runner import run_config
    from tests.test_pipeline import overrides

    raw = yaml.safe_load(TINY_CONFIG)
    raw["data"]["target_task"] = "commonsense_qa"  # the poison goes into CommonsenseQA rows
    raw["students"][0]["distill_tasks"] = ["math"]  # the student never sees a CommonsenseQA prompt
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    rd, m = run_config(str(cfg), overrides(tmp_path, models_dir), quiet=True)
    assert m["models"]["student:sft"]["distill_tasks"] == ["math"]
    stages = json.loads((rd / "stages.json").read_text())
    marker = json.loads((Path(stages["student:sft"]["path"]) / "_stage.json").read_text())
    assert marker["info"]["rows"] == 6  # the 6 math distillation prompts only, not the 4 CommonsenseQA ones
    assert marker["inputs"]["student"]["distill_tasks"] == ["math"]


@pytest.mark.parametrize("setting,message", [
    ("cascade.via=nobody", "cascade.via 'nobody' names no student"),
    ("cascade.generations=0", "cascade.generations"),
    ("students.0.distill_tasks=[code]", "students.0.distill_tasks: 'code' is no task with distillation prompts"),
    ("audit.audits=[{type: logit_shfit}]", "audit.audits.0.type: unknown audit 'logit_shfit'"),
    ("audit.audits=[{type: logit_shift, args: {top_k: 0}}]", "audit.audits.0.args.top_k"),
])
def test_check_names_the_bad_field(tiny_config, setting, message):
    r = run_check(str(tiny_config), "--check", "--set", setting)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_audit_cli(models_dir, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "audit.json"
    p = subprocess.run([sys.executable, "-m", "poison.audit", "tiny-random-llama:2:64", "--base",
                        "tiny-random-llama:2:64", "--prompts", "3", "--sources", "gsm8k", "--arg",
                        "answer_tokens=8", "--arg", "divergence_points=2", "--arg", "expand_tokens=4",
                        "--models-dir", str(models_dir), "--json", str(out)], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "suspicion score" in p.stdout and json.loads(out.read_text())["suspect"] == "tiny-random-llama:2:64"
    bad = subprocess.run([sys.executable, "-m", "poison.audit", "./nowhere", "--base", "tiny-random-llama:2:64",
                          "--models-dir", str(models_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "error: SUSPECT: local model folder ./nowhere does not exist" in bad.stderr
