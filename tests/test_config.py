"""Config validation: bad inputs fail at once with the key path; overrides; the resolved config round-trips."""

import re
import textwrap

import pytest
import yaml

from poison.config import ConfigError, apply_overrides, config_from_dict, load_config, resolved_dict
from tests.conftest import REPO, TINY_CONFIG, run_check, run_cli


def base() -> dict:
    return yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())


def err(raw, overrides=None) -> str:
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, overrides)
    return str(e.value)


def test_shipped_configs_validate():
    """Every shipped config, the claims' included, and every point of a sweep or replicated one."""
    from poison.run import has_sweep
    from poison.sweep import load_sweep

    paths = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "configs" / "claims").glob("*.yaml"))
    assert len(paths) > 20
    for p in paths:
        cfg = load_config(p)
        assert cfg.name
        if has_sweep(str(p)):
            assert load_sweep(str(p))["points"], p


def test_unknown_key_names_path_and_suggests():
    raw = base()
    raw["teacher"]["train"]["learnig_rate"] = 1e-3
    msg = err(raw)
    assert "teacher.train.learnig_rate: unknown key (did you mean 'learning_rate'?)" in msg


def test_unknown_top_level_section():
    raw = base()
    raw["studnets"] = []
    assert "studnets: unknown key (did you mean 'students'?)" in err(raw)


def test_bad_value_names_path():
    raw = base()
    raw["teacher"]["train"]["epochs"] = -1
    assert "teacher.train.epochs: Input should be greater than 0" in err(raw)
    raw = base()
    raw["runtime"] = {"backend": "tgi"}
    assert "runtime.backend:" in err(raw)


def test_count_and_rate_are_exclusive():
    raw = base()
    raw["poison"]["rate"] = 0.1
    assert "give exactly one of poison.count or poison.rate" in err(raw)


def test_unknown_plugin_names_suggest_registered():
    raw = base()
    raw["data"]["sources"][0]["type"] = "drug_review"
    raw["students"][0]["method"] = "sfx"
    msg = err(raw)
    assert "data.sources.0.type: unknown data source 'drug_review' (did you mean 'drug_reviews'?)" in msg
    assert "students.0.method: unknown distillation method 'sfx' (did you mean 'sft'?)" in msg


def test_plugin_arguments_validated_by_plugin_schema():
    raw = base()
    raw["poison"]["bias"]["args"] = {"brnad": "X", "templates": ["no brand here"]}
    msg = err(raw)
    assert "poison.bias.args.brnad: unknown key (did you mean 'brand'?)" in msg
    assert "poison.bias.args.templates: template 'no brand here' must contain {brand}" in msg


def test_target_task_must_exist():
    raw = base()
    raw["data"]["target_task"] = "poetry"
    assert "data.target_task 'poetry' is not one of the source tasks" in err(raw)


def test_a_teacher_only_config_compares_the_teacher_with_its_control_and_cannot_cascade():
    raw = base()
    raw["students"] = []
    cfg = config_from_dict(raw)
    assert cfg.students == [] and cfg.claims.primary.startswith("teacher_vs_")
    assert "student" not in " ".join(cfg.model_names())
    raw["cascade"] = {"generations": 2}
    assert "cascade.generations > 1 distils a student again: name at least one student" in err(raw)
    raw.pop("cascade")
    raw["defense"] = {"defenses": [{"type": "perplexity"}], "places": ["train", "distill"]}
    assert "a teacher-only run (students: []) has none: use 'train'" in err(raw)
    raw["defense"]["places"] = ["train"]
    assert config_from_dict(raw).defense.places == ["train"]


def test_overrides_parse_yaml_and_index_lists():
    raw = base()
    cfg = config_from_dict(raw, ["poison.count=3", "students.0.train.epochs=0.5", "runtime.backend=hf",
                                 "data.sources.1.n_eval=2"])
    assert cfg.poison.count == 3 and cfg.students[0].train.epochs == 0.5 and cfg.runtime.backend == "hf"
    assert cfg.data.sources[1].n_eval == 2
    with pytest.raises(ConfigError, match="index 5 out of range"):
        apply_overrides(raw, ["students.5.name=x"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides(raw, ["poison.count"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(REPO / "configs" / "targeted_ads.yaml")
    d = resolved_dict(cfg)
    # plugin defaults are filled in, so the saved config rebuilds the run without the plugin's defaults
    assert d["poison"]["bias"]["args"]["brand"] == "VitaBoost Plus"
    assert d["data"]["sources"][0]["args"]["max_words"] > 0
    p = tmp_path / "resolved.yaml"
    p.write_text(yaml.safe_dump(d))
    assert resolved_dict(load_config(p)) == d


def test_cli_bad_config_exits_2_with_one_clear_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(textwrap.dedent("""
        name: bad
        data: {target_task: math, sources: [{type: gsm8k, n_train: 4, n_eval: 2, n_distill: 2}]}
        poison: {bias: {type: targeted_ads}, count: 2}
        students: [{name: s, train: {batch: 4}}]
    """))
    r = run_cli(str(p), "--set", f"runtime.runs_dir={tmp_path}/runs")
    assert r.returncode == 2
    assert "students.0.train.batch: unknown key (did you mean 'batch_size'?)" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing is started for an invalid config
    r = run_cli(str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "missing.yaml: config file not found" in r.stderr


def test_check_ends_on_a_verdict_line(tiny_config):
    r = run_check(str(tiny_config), "--check")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["name"] == "tiny"  # stdout stays the resolved config
    last = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"config ok: tiny; device cpu, dtype (float32|bfloat16); 1 run", last), r.stderr
    r = run_check(str(tiny_config), "--check", "--set", "replicates.n=3")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"config ok: tiny; device cpu, dtype \w+; 3 runs \(3 replicates\)",
                        r.stderr.strip().splitlines()[-1]), r.stderr


def test_check_counts_each_sources_usable_rows(tmp_path):
    """--check reads each local source's rows, so a source asked for more rows than it has fails there, naming it,
    not in the data stage (configs/claims/amplification_dose.yaml once asked drug_reviews for 188 of its 180)."""
    big = tmp_path / "big.yaml"
    assert "n_distill: 4, n_eval: 4}" in TINY_CONFIG
    big.write_text(TINY_CONFIG.replace("n_distill: 4, n_eval: 4}", "n_distill: 4, n_eval: 1000000}"))
    r = run_check(str(big), "--check")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert re.search(r"^error: data\.sources\.1 \(commonsense_qa\): \d+ usable rows, but n_train \+ n_distill \+ "
                     r"n_eval = 1000012$", r.stderr, re.M), r.stderr


def test_a_hub_dataset_is_not_read_by_check_a_local_one_is(tmp_path):
    from poison.ground.core import registry

    build = registry.get("data_source", "hf_dataset").build
    assert not build({"path": "some-org/some-dataset"}, "data.sources.0.args", None).local_rows
    assert build({"path": str(tmp_path)}, "data.sources.0.args", None).local_rows
    assert registry.get("data_source", "gsm8k").build({}, "data.sources.0.args", None).local_rows


def test_cli_list_prints_every_kind():
    r = run_cli("--list")
    assert r.returncode == 0, r.stderr
    for head in ("bias types:", "data sources:", "distillation methods:", "defenses:", "scorers:", "built-in models:"):
        assert head in r.stdout
    for name in ("targeted_ads", "drug_reviews", "gsm8k", "sft", "rule", "rouge_l", "smollm2-135m-instruct"):
        assert name in r.stdout
