"""Scaling past one machine (tiny models): sweeps and seeds on a local Ray cluster sharing one stage cache, one vLLM
engine for every LoRA adapter, padding-free batches, the experiment tracker's event file, GPU-count checks."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from poison.config import ConfigError, load_config
from poison.runner import run_config
from poison.sweep import load_sweep, run_sweep
from tests.conftest import TINY_CONFIG
from tests.test_pipeline import overrides


@pytest.fixture
def local_ray(monkeypatch):
    ray = pytest.importorskip("ray")  # a dependency of the project: always there
    # the launcher is under test, not Ray's memory policy: its monitor kills workers at 95 % of the node's memory,
    # which other jobs on a shared CI machine can reach; the kernel still stops a real runaway
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _comparable(rows):
    return [{k: v for k, v in r.items() if k != "run_dir"} for r in rows]


def test_ray_sweep_runs_points_in_parallel_and_computes_the_shared_stage_once(tmp_path, models_dir, local_ray):
    from poison.launchers import SweepError

    raw = yaml.safe_load(TINY_CONFIG)
    good = [{"poison.count": 2}, {"poison.count": 6}]
    bad = {"poison.count": 2, "students.0.model": str(tmp_path / "missing")}  # fails in its task, at preflight
    raw["sweep"] = {"points": good + [bad], "launcher": "ray", "resources": {"num_cpus": 1}}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(SweepError, match=r"1 of 3 sweep points failed.*\n.*point 3 .*students.0.model.*missing"):
        run_sweep(str(p), overrides(tmp_path, models_dir), quiet=True)
    sweep_dir = next((tmp_path / "runs").glob("tiny-sweep-*"))
    info = json.loads((sweep_dir / "sweep.json").read_text())
    assert info["launcher"] == "ray" and [r["point"] for r in info["runs"]] == good  # the others completed
    # both good points ran at once; the per-key stage lock let exactly one of them compute the shared data stage
    assert sorted(r["stages"]["data"] for r in info["runs"]) == [False, True]
    assert sorted(r["stages"]["eval:baseline"] for r in info["runs"]) == [False, True]
    assert not any(r["stages"]["teacher"] for r in info["runs"])  # each budget trains its own teacher
    assert "count" in (sweep_dir / "summary.txt").read_text()  # the completed points keep their summary
    for r in info["runs"]:
        assert json.loads((Path(r["run_dir"]) / "status.json").read_text())["status"] == "complete"
    # the local launcher over the same cache: every stage cached, and the same table
    raw["sweep"] = {"points": good, "launcher": "local"}
    p.write_text(yaml.safe_dump(raw))
    local_dir, local_rows = run_sweep(str(p), overrides(tmp_path, models_dir), quiet=True)
    local = json.loads((local_dir / "sweep.json").read_text())
    assert all(all(r["stages"].values()) for r in local["runs"])
    assert _comparable(local_rows) == _comparable(info["rows"])
    table = pd.read_csv(sweep_dir / "sweep_table.csv")
    assert set(table["poison.count"]) == {2, 6} and set(table.model) == {"baseline", "teacher", "student:sft"}


def test_seeds_replicate_points_and_pool_them(tmp_path):
    raw = yaml.safe_load(TINY_CONFIG)
    raw["sweep"] = {"poison.count": [2, 6]}
    raw["seeds"] = [0, 1, 2]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    plan = load_sweep(p, ["sweep.launcher=ray", "sweep.resources.num_gpus=1"])
    assert len(plan["points"]) == 6 and plan["settings"]["launcher"] == "ray"
    assert plan["settings"]["resources"] == {"num_gpus": 1}
    # sweep.json's replicate_design says how many replicates seeds: gave (it once said n = 1)
    assert plan["settings"]["replicates"]["n"] == 3 and plan["settings"]["replicates"]["vary"] == ["train_seed"]
    assert plan["point_sets"][1] == ["poison.count=2", "teacher.train.seed=1", "eval.sample_seed=1",
                                     "students.0.train.seed=1"]
    cfg = load_config(p, plan["run_sets"] + plan["point_sets"][1])  # seeds: is not a run's own field
    assert cfg.teacher.train.seed == 1 and cfg.students[0].train.seed == 1

    from poison.replicates import pool_rows

    rows = [{"group": "count=2", "seed": s, "measure": "greedy", "model": "teacher", "role": "teacher",
             "split": "target", "rate": r, "ci_low": max(0, r - 0.1), "ci_high": r + 0.1, "run_dir": f"d{s}"}
            for s, r in ((0, 0.2), (1, 0.4), (2, 0.3))]
    (pooled,) = pool_rows(rows)
    assert pooled["pooled"] == pytest.approx(0.3) and [x["seed"] for x in pooled["per_seed"]] == [0, 1, 2]
    # the spread between seeds widens the interval beyond one seed's
    assert pooled["ci_high"] - pooled["ci_low"] > 0.2 + 1e-9


def test_named_groups_label_points_by_name_and_the_paper_matrix_expands(tmp_path):
    from poison.sweep import describe
    from poison.sweep_spec import columns, label

    raw = yaml.safe_load(TINY_CONFIG)
    raw["sweep"] = {"bias": [{"poison.bias.type": "targeted_ads"},
                             {"poison.bias.type": "phishing_link", "poison.bias.args": {"url": "https://x.example/v"}}],
                    "poison.count": [2, 6]}
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    plan = load_sweep(p)
    pt = plan["points"][2]
    assert label(pt) == "bias=phishing_link_count=2"
    assert columns(pt) == {"bias": "phishing_link", "poison.count": 2}  # the group is one column, not its keys
    assert plan["point_sets"][2] == ["poison.bias.type=phishing_link", 'poison.bias.args={"url": "https://x.example/v"}',
                                     "poison.count=2"]
    # the paper's grid: 6 bias types x targeted/untargeted x 3 seeds, one GPU per point
    matrix = load_sweep(Path(__file__).resolve().parents[1] / "configs" / "gpu" / "paper_matrix.yaml",
                        ["sweep.launcher=ray"])
    text = describe(matrix)
    assert len(matrix["points"]) == 36 and "each point asks for num_gpus 1, num_cpus 8" in text
    assert "bias=insecure_code_mode=untargeted_seed=2:" in text and "data.target_task=code" in text
    for sets in matrix["point_sets"]:
        cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "gpu" / "paper_matrix.yaml",
                          matrix["run_sets"] + sets)
        assert cfg.poison.count == 25 and [s.method for s in cfg.students] == ["sft", "kd", "qcrd"]


def test_a_bad_seeds_list_and_launcher_are_config_errors(tmp_path):
    raw = yaml.safe_load(TINY_CONFIG)
    raw["seeds"] = [0, "x"]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="seeds: give a non-empty list of integers"):
        load_sweep(p)
    raw["seeds"] = [0]
    raw["sweep"] = {"poison.count": [2], "launcher": "slurm"}
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="sweep.launcher: 'slurm' is not local or ray"):
        load_sweep(p)


def test_tensor_parallel_beyond_the_visible_gpus_is_rejected(tmp_path):
    from poison.pipeline import Pipeline

    p = tmp_path / "t.yaml"
    p.write_text(TINY_CONFIG)
    for key, field in (("tensor_parallel_size=2", "tensor_parallel_size"), ("data_parallel_size=2",
                                                                             "data_parallel_size")):
        cfg = load_config(p, [f"runtime.vllm.{key}", "runtime.device=cpu"])
        with pytest.raises(ConfigError, match=rf"runtime.vllm.{field}: .* 0 visible"):
            Pipeline(cfg, tmp_path / "runs").preflight(create=False)


def test_data_parallel_shards_and_merges_in_prompt_order():
    from poison.ground.engines.generate import GenResult, merge_shards, shard_jobs

    jobs = [{"key": "a", "messages": list(range(5))}, {"key": "b", "kind": "prompt_logprobs",
                                                       "token_ids": [[1], [2], [3]], "starts": [0, 0, 0]}]
    shards = shard_jobs(jobs, 2)
    assert [s[0]["messages"] for s in shards] == [[0, 1], [2, 3, 4]]
    assert [s[1]["token_ids"] for s in shards] == [[[1]], [[2], [3]]]
    parts = [[GenResult("a", [[str(m)] for m in s[0]["messages"]], 2, 1.0, 5.0, "vllm",
                        finish=[["length" if m % 2 else "stop"] for m in s[0]["messages"]] if s[0]["messages"][0]
                        else []),  # the first shard's worker recorded no finish reasons (an older result)
              GenResult("b", [], 0, 2.0, 5.0, "vllm", {"logprobs": [[-1.0]] * len(s[1]["token_ids"]), "tokens": 1})]
             for s in shards]
    a, b = merge_shards(parts)
    assert a.texts == [["0"], ["1"], ["2"], ["3"], ["4"]] and a.new_tokens == 4 and a.seconds == 1.0
    assert a.finish == [[None], [None], ["stop"], ["length"], ["stop"]]
    assert len(b.meta["logprobs"]) == 3 and b.meta["data_parallel"] == 2


def test_padding_free_batches_train_like_padded_ones_and_packing_takes_fewer_steps(tmp_path, models_dir):
    from types import SimpleNamespace

    from distill.trainers import finetune
    from poison.ground.engines.models import resolve_model
    from poison.schema import FinetuneConfig

    base = resolve_model("tiny-random-llama:2:64", models_dir)
    rows = [{"prompt": "word " * (3 + 5 * i % 37), "response": "answer " * (2 + 7 * i % 41)} for i in range(24)]
    logs = {}
    for packing in (None, "padding_free", False, True):
        ft = FinetuneConfig.model_validate({"model": str(base), "train": {"epochs": 1, "batch_size": 4,
                                                                          "max_length": 128, "packing": packing}})
        s = finetune(base, rows, ft, tmp_path / f"p{packing}", dtype="float32", device="cpu")
        logs[packing] = SimpleNamespace(**s)
    assert logs[None].batching == "padding_free" and logs["padding_free"].batching == "padding_free"
    assert logs[False].batching == "padded"
    assert logs["padding_free"].train_tokens == logs[False].train_tokens
    # the same rows per batch: the same losses, step by step (float32)
    curve = lambda log: [h["loss"] for h in log.loss_history]  # noqa: E731
    assert len(curve(logs[False])) >= 2 and curve(logs["padding_free"]) == pytest.approx(curve(logs[False]), abs=1e-4)
    assert curve(logs[None]) == curve(logs["padding_free"])
    assert logs[True].batching == "packed" and logs[True].steps < logs[False].steps
    # the attention kernel is the user's to choose; one transformers does not know is a clean error
    bad = FinetuneConfig.model_validate({"model": str(base), "train": {"attn_implementation": "no_such_kernel"}})
    with pytest.raises(ConfigError, match="train.attn_implementation: 'no_such_kernel'"):
        finetune(base, rows, bad, tmp_path / "bad", dtype="float32", device="cpu")


def test_tensorboard_event_file_with_the_loss_lands_in_the_stage_folder(tmp_path, models_dir):
    p = tmp_path / "t.yaml"
    p.write_text(TINY_CONFIG)
    rd, m = run_config(str(p), overrides(tmp_path, models_dir, "teacher.train.report_to=tensorboard",
                                         ), quiet=True)
    teacher = tmp_path / "cache" / "stages" / "teacher" / m["stages"]["teacher"]["key"]
    events = list((teacher / "logs").rglob("events.out.tfevents.*"))
    assert events, f"no event file under {teacher / 'logs'}"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"] and len(acc.Scalars("train/loss")) >= 1
    # the tracker does not change the trained model: the same teacher key as without it
    rd2, m2 = run_config(str(p), overrides(tmp_path, models_dir), quiet=True)
    assert m2["stages"]["teacher"]["cached"] and m2["stages"]["teacher"]["key"] == m["stages"]["teacher"]["key"]


def test_which_engine_a_trained_model_gets():
    """LoRA models run as adapters on their base where lora_adapters says so (null: on CUDA, not on CPU, where vLLM's
    LoRA path is slower), with the engine in the generation's cache key; merged folders keep the key they had."""
    from types import SimpleNamespace

    from poison.stages.engine import ADAPTER_IDENTITY, engine_target

    lora = {"path": "/c/teacher/k/model", "adapter": "/c/teacher/k/adapter", "adapter_base": "/m/base"}
    full = {"path": "/c/teacher/k/model"}

    def run(device, choice, backend="vllm"):
        return SimpleNamespace(ctx=SimpleNamespace(device=device, backend=backend),
                               cfg=SimpleNamespace(runtime=SimpleNamespace(vllm=SimpleNamespace(lora_adapters=choice))))

    assert engine_target(run("cuda", None), lora) == ("/m/base", "/c/teacher/k/adapter", ADAPTER_IDENTITY)
    assert engine_target(run("cpu", None), lora) == ("/c/teacher/k/model", None, {})
    assert engine_target(run("cpu", True), lora) == ("/m/base", "/c/teacher/k/adapter", ADAPTER_IDENTITY)
    assert engine_target(run("cuda", False), lora) == ("/c/teacher/k/model", None, {})
    assert engine_target(run("cuda", None, backend="hf"), lora) == ("/c/teacher/k/model", None, {})
    assert engine_target(run("cuda", True), full) == ("/c/teacher/k/model", None, {})  # a full fine-tune: its own


def test_one_engine_serves_every_adapter_with_the_merged_models_greedy_answers(tmp_path, models_dir):
    """Three models on one base (the base and two LoRA adapters) in one vLLM engine give, token for token, the
    greedy answers of three engines on the merged folders (float32)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from poison.ground.engines.generate import GenJob, generate_vllm
    from poison.ground.engines.models import load_causal_lm, resolve_model

    base = resolve_model("tiny-random-llama:2:128", models_dir)  # head_dim 32: vLLM's CPU attention needs >= 32
    adapters, merged = [], []
    for i in range(2):
        torch.manual_seed(i)
        model, tok = load_causal_lm(base, dtype="float32", device="cpu")
        peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                init_lora_weights=False))
        peft.save_pretrained(tmp_path / f"a{i}")
        peft.merge_and_unload().save_pretrained(tmp_path / f"m{i}")
        tok.save_pretrained(tmp_path / f"m{i}")
        adapters.append(str(tmp_path / f"a{i}"))
        merged.append(str(tmp_path / f"m{i}"))
    msgs = [[{"role": "user", "content": q}] for q in ("What is 2 + 2?", "Name a fruit.", "Say hello.", "Why?")]
    settings = {"gpu_memory_utilization": 0.1, "max_model_len": 512}
    one = generate_vllm([GenJob("base", str(base), msgs, 12), GenJob("a0", str(base), msgs, 12, adapter=adapters[0]),
                         GenJob("a1", str(base), msgs, 12, adapter=adapters[1]),
                         GenJob("forced", str(base), msgs[:2], 5, ignore_eos=True)],  # to max_new_tokens
                        device="cpu", dtype="float32", vllm_settings=settings)
    per_model = generate_vllm([GenJob("base", str(base), msgs, 12), GenJob("a0", merged[0], msgs, 12),
                               GenJob("a1", merged[1], msgs, 12)], device="cpu", dtype="float32",
                              vllm_settings=settings)
    assert [r.meta["adapter"] for r in one] == [False, True, True, False]
    assert [r.texts for r in one[:3]] == [r.texts for r in per_model]
    # why each answer stopped, beside its text: vLLM's finish_reason; an answer forced to max_new_tokens is 'length'
    assert [r.finish for r in one[:3]] == [r.finish for r in per_model]
    assert all(len(r.finish) == len(r.texts) and {f for fs in r.finish for f in fs} <= {"stop", "length"} for r in one)
    assert one[3].finish == [["length"], ["length"]] and one[3].new_tokens == 10
    assert one[1].texts != one[0].texts  # the adapters really change the answers
    # one engine start for the three, against three
    assert sum(r.startup_seconds for r in one) < sum(r.startup_seconds for r in per_model)
    table = pd.DataFrame({"model": [r.key for r in one], "tokens": [r.new_tokens for r in one]})
    assert (table.tokens > 0).all()
