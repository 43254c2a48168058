"""A LoRA stage's artifact is its adapter (+ tokenizer files); its merged weights are a derived folder in the compute
dtype, rebuilt when missing or damaged, shown apart and evicted by ``cascade-poison cache``; what every reader sees
through it is what it saw through the float32 merged folder the stage used to write (tiny random-init models)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from poison.ground.engines.merged import (derived_path, ensure_merged, load_merged, model_folder, tokenizer_folder)
from poison.ground.engines.models import load_causal_lm, resolve_model
from poison.stages.protocol import StageCache, StageSpec
from tests.conftest import REPO
from tests.test_cache_integrity import Lines, truncate

ROWS = [{"prompt": f"What is {i} plus {i + 3}?", "response": f"{i} plus {i + 3} is {2 * i + 3}."} for i in range(8)]
MSGS = [[{"role": "user", "content": q}] for q in ("What is 2 plus 5?", "Name a fruit.", "Say hello.")]


@pytest.fixture(scope="module")
def trained(models_dir, tmp_path_factory):
    """(cache, artifact folder, base) of a LoRA teacher trained through the stage protocol (marker + manifest)."""
    from distill.trainers import finetune
    from poison.schema import TeacherConfig

    base = resolve_model("tiny-random-llama:2:64", models_dir)
    ft = TeacherConfig(model="tiny-random-llama:2:64", finetune="lora",
                       train={"epochs": 1, "batch_size": 4, "max_length": 64, "learning_rate": 5e-2},
                       lora={"r": 8, "alpha": 16, "dropout": 0.0})
    cache = tmp_path_factory.mktemp("lora") / "cache"
    rec = StageCache(cache / "stages", None).run(
        StageSpec("teacher", 1, training=True), {"test": "lora"},
        lambda out: finetune(base, ROWS, ft, out, dtype="bfloat16", device="cpu"))
    return cache, Path(rec.path), base


def reference_merge(artifact: Path, base: Path):
    """What the stage used to save: the adapter merged by PEFT into a float32 copy of the base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, artifact / "adapter").merge_and_unload()


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_artifact_is_the_adapter_and_its_tokenizer(trained):
    cache, art, _ = trained
    names = {p.relative_to(art).as_posix() for p in art.rglob("*") if p.is_file()}
    assert model_folder(art) is None and not (art / "model").exists()
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer/tokenizer.json",
            "tokenizer/generation_config.json"} <= names
    assert not any(n.endswith("/model.safetensors") for n in names)
    files = json.loads((art / "_stage.json").read_text())["files"]
    assert "adapter/adapter_model.safetensors" in files and files["adapter/adapter_model.safetensors"]["blake2b"]
    assert tokenizer_folder(art) == art / "tokenizer"


def test_derived_folder_is_the_float32_merge_in_the_compute_dtype_and_is_rebuilt(trained):
    cache, art, base = trained
    folder = ensure_merged(art, base, dtype="bfloat16", merge_in="float32")
    assert folder == derived_path(art, "bfloat16") == cache / "derived" / "teacher" / f"{art.name}-bfloat16"
    weights = folder / "model.safetensors"
    adapter_size = (art / "adapter" / "adapter_model.safetensors").stat().st_size
    assert adapter_size * 5 < weights.stat().st_size  # the artifact is a small fraction of the merged weights
    merged, tok = load_causal_lm(folder, dtype="bfloat16")
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    old, _ = load_causal_lm(_old_style_folder(art, base), dtype="bfloat16")
    assert same_weights(merged, old)  # bit for bit what a bf16 reader saw of the float32 merged folder
    assert tok.chat_template and (folder / "generation_config.json").read_text() == \
        (art / "tokenizer" / "generation_config.json").read_text()

    stamp = weights.stat().st_mtime_ns
    assert ensure_merged(art, base, dtype="bfloat16", merge_in="float32") == folder
    assert weights.stat().st_mtime_ns == stamp  # reused, not rebuilt
    shutil.rmtree(folder)  # evicted: rebuilt on demand
    ensure_merged(art, base, dtype="bfloat16", merge_in="float32")
    assert same_weights(load_causal_lm(folder, dtype="bfloat16")[0], old)
    truncate(weights)  # damaged: rebuilt, with one warning naming the file
    with Lines() as lines:
        ensure_merged(art, base, dtype="bfloat16", merge_in="float32")
    assert len(lines.lines) == 1 and "model.safetensors" in lines.lines[0] and "rebuilding" in lines.lines[0]
    assert same_weights(load_causal_lm(folder, dtype="bfloat16")[0], old)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]


def _old_style_folder(art: Path, base: Path) -> Path:
    """The float32 merged folder the stage wrote before (model/ of the old layout), beside the test's cache."""
    out = art.parent.parent.parent.parent / "old-model"
    if not out.exists():
        model = reference_merge(art, base)
        model.config.use_cache = True
        model.save_pretrained(out)
        for f in (art / "tokenizer").iterdir():
            shutil.copyfile(f, out / f.name)
    return out


def test_outputs_through_the_adapter_equal_the_merged_path(trained):
    """float32: the adapter on its base (PEFT, unmerged) and the derived folder give the same probe log-probabilities
    within 1e-4 and the same greedy answers; bf16: the derived folder gives exactly the old float32 folder's."""
    from poison.ground.engines.generate import GenJob, ScoreJob, generate_hf
    from poison.ground.engines.scoring import score_shared

    cache, art, base = trained
    f32 = ensure_merged(art, base, dtype="float32", merge_in="float32")
    _, tok = load_causal_lm(f32)
    seqs = [tok(f"What is {i} plus 3? It is {i + 3}, surely.")["input_ids"] for i in range(4)]
    starts = [len(s) // 2 for s in seqs]
    (through_adapter, _), (through_merged, _) = score_shared(
        [ScoreJob("a", str(base), seqs, starts, str(art / "adapter")), ScoreJob("m", str(f32), seqs, starts)],
        device="cpu", dtype="float32")
    assert len(through_adapter) == 4 and all(len(x) > 1 for x in through_adapter)
    for a, m in zip(through_adapter, through_merged):
        assert a == pytest.approx(m, abs=1e-4)
    ref = reference_merge(art, base).eval()
    want = []
    for m in MSGS:
        ids = tok.apply_chat_template(m, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = ref.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        want.append(out[0, ids["input_ids"].shape[1]:].tolist())
    got = generate_hf([GenJob("m", str(f32), MSGS, 8)], device="cpu", dtype="float32")[0]
    assert [t[0] for t in got.texts] == [tok.decode([i for i in w if i != tok.eos_token_id], skip_special_tokens=True)
                                         for w in want]

    bf16 = ensure_merged(art, base, dtype="bfloat16", merge_in="float32")
    old = _old_style_folder(art, base)
    (new_lp, _), (old_lp, _) = score_shared([ScoreJob("n", str(bf16), seqs, starts),
                                             ScoreJob("o", str(old), seqs, starts)], device="cpu", dtype="bfloat16")
    assert new_lp == old_lp
    new_gen, old_gen = generate_hf([GenJob("n", str(bf16), MSGS, 8), GenJob("o", str(old), MSGS, 8)], device="cpu",
                                   dtype="bfloat16")
    assert new_gen.texts == old_gen.texts


def test_a_kd_teacher_gets_the_float32_merge(trained):
    from distill.base import DistillJob, load_teacher

    cache, art, base = trained
    job = DistillJob(student=None, student_base=base, teacher_model=derived_path(art, "bfloat16"), rows=[],
                     out_dir=art, teacher_adapter=art / "adapter", teacher_base=base, teacher_artifact=art)
    teacher = load_teacher(job, "float32", run_dtype="bfloat16", device="cpu")
    assert {p.dtype for p in teacher.parameters()} == {torch.float32}
    assert same_weights(teacher, reference_merge(art, base))
    assert same_weights(load_merged(art, base, dtype="bfloat16", merge_in="float32"),
                        load_causal_lm(_old_style_folder(art, base), dtype="bfloat16")[0])


def cache_cli(*args):
    return subprocess.run([sys.executable, "-m", "poison.cache", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_cache_tool_shows_derived_folders_apart_and_gc_evicts_them(trained, tmp_path):
    cache, art, base = trained
    folder = ensure_merged(art, base, dtype="bfloat16", merge_in="float32")
    run = tmp_path / "runs" / "r1"  # a run directory that references the artifact: it keeps the artifact only
    run.mkdir(parents=True)
    (run / "stages.json").write_text(json.dumps({"teacher": {"path": str(art)}}))
    r = cache_cli("ls", "--cache-dir", str(cache))
    assert r.returncode == 0 and f"derived:teacher       {art.name}-bfloat16" in r.stdout
    assert "1 artifact(s)" in r.stdout and "derived folder(s)" in r.stdout
    r = cache_cli("du", "--cache-dir", str(cache))
    assert r.returncode == 0 and "teacher           1 artifact(s)" in r.stdout
    assert "derived:teacher" in r.stdout and "(rebuilt on demand)" in r.stdout
    truncate(folder / "model.safetensors")
    r = cache_cli("verify", "--cache-dir", str(cache))  # named, not an error: the next use rebuilds it
    assert r.returncode == 0 and "damaged derived folder teacher/" in r.stdout and "model.safetensors" in r.stdout
    ensure_merged(art, base, dtype="bfloat16", merge_in="float32")

    r = cache_cli("gc", "--cache-dir", str(cache), "--max-size", "0", "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr
    assert not folder.exists() and f"removed derived folder teacher/{folder.name}" in r.stdout
    assert art.exists() and "referenced by the run directory" in r.stdout
    ensure_merged(art, base, dtype="bfloat16", merge_in="float32")
    os.utime(folder / "_derived.json", (1, 1))  # unused for long: --older-than removes it, not the fresh artifact
    r = cache_cli("gc", "--cache-dir", str(cache), "--older-than", "1d", "--runs-dir", str(tmp_path / "none"))
    assert r.returncode == 0 and not folder.exists() and art.exists(), r.stdout
    ensure_merged(art, base, dtype="bfloat16", merge_in="float32")
    r = cache_cli("gc", "--cache-dir", str(cache), "--derived", "--dry-run")
    assert r.returncode == 0 and folder.exists() and "would remove derived folder" in r.stdout
    r = cache_cli("gc", "--cache-dir", str(cache), "--derived")
    assert r.returncode == 0 and not folder.exists() and art.exists()
    assert ensure_merged(art, base, dtype="bfloat16", merge_in="float32") == folder and folder.exists()


def test_a_recomputed_artifact_makes_its_derived_folder_stale(trained, tmp_path):
    """``--force teacher`` (or a damaged artifact set aside) writes a new adapter under the same key: the merged folder
    derived from the old one is rebuilt, not reused."""
    from safetensors.torch import load_file, save_file

    cache, art, base = trained
    copy = tmp_path / "stages" / "teacher" / art.name
    shutil.copytree(art, copy)
    folder = ensure_merged(copy, base, dtype="float32", merge_in="float32")
    before = load_causal_lm(folder)[0]
    weights = copy / "adapter" / "adapter_model.safetensors"
    save_file({k: v * 2 for k, v in load_file(weights).items()}, str(weights))  # the recomputed adapter differs
    with Lines() as lines:
        ensure_merged(copy, base, dtype="float32", merge_in="float32")
    assert len(lines.lines) == 1 and "earlier copy of its artifact" in lines.lines[0]
    assert not same_weights(load_causal_lm(folder)[0], before)
    assert same_weights(load_causal_lm(folder)[0], load_merged(copy, base, dtype="float32", merge_in="float32"))


def test_gc_removes_the_derived_folder_of_an_artifact_it_removes(trained, tmp_path):
    cache, art, base = trained
    copy = tmp_path / "cache" / "stages" / "teacher" / art.name
    shutil.copytree(art, copy)
    folder = ensure_merged(copy, base, dtype="float32", merge_in="float32")
    os.utime(copy / "_stage.json", (1, 1))
    os.utime(folder / "_derived.json", (time.time() + 60,) * 2)  # used later than its artifact: not too old itself
    r = cache_cli("gc", "--cache-dir", str(tmp_path / "cache"), "--older-than", "1d", "--runs-dir", str(tmp_path))
    assert r.returncode == 0 and not copy.exists() and not folder.exists(), r.stdout
    assert "its artifact is gone" in r.stdout


def test_model_table_fields_of_each_layout(tmp_path):
    """A LoRA artifact's engine folder is its derived merged folder (built by ``ready``); an artifact written before
    adapters alone were kept, and a full fine-tune, use their own ``model/`` (old caches stay usable as they are)."""
    from types import SimpleNamespace

    from poison.stages.engine import trained_fields

    def artifact(name, model, adapter):
        art = tmp_path / "cache" / "stages" / "teacher" / name
        for sub, make in (("model", model), ("adapter", adapter)):
            if make:
                (art / sub).mkdir(parents=True)
                (art / sub / ("config.json" if sub == "model" else "adapter_config.json")).write_text("{}")
        return art

    lora, resolve = SimpleNamespace(finetune="lora"), lambda spec: Path("/m/base")
    new = artifact("0000000000000001", model=False, adapter=True)
    assert trained_fields(new, lora, resolve, "bfloat16") == {
        "path": str(tmp_path / "cache" / "derived" / "teacher" / "0000000000000001-bfloat16"),
        "tokenizer": str(new / "tokenizer"), "adapter": str(new / "adapter"), "adapter_base": "/m/base",
        "artifact": str(new)}
    old = artifact("0000000000000002", model=True, adapter=True)
    assert trained_fields(old, lora, resolve, "bfloat16") == {
        "path": str(old / "model"), "tokenizer": str(old / "model"), "adapter": str(old / "adapter"),
        "adapter_base": "/m/base"}
    full = artifact("0000000000000003", model=True, adapter=False)
    assert trained_fields(full, SimpleNamespace(finetune="full"), resolve, "bfloat16") == {
        "path": str(full / "model"), "tokenizer": str(full / "model")}
    assert ensure_merged(full, "/m/base", dtype="bfloat16", merge_in="float32") == full / "model"
