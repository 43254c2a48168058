"""``cascade-poison cache slim`` rewrites a LoRA artifact of the old layout (merged float32 ``model/`` beside
``adapter/``) as today's adapter + tokenizer files: the marker's manifest follows, ``cache verify`` passes, and the
merged weights derived afterwards are those readers saw through ``model/`` (tiny random-init model). Damaged, QLoRA
and locked entries are left alone; a kept run directory's reference does not stop it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from poison.ground.core.artifacts import folder_size, manifest
from poison.ground.engines.merged import ensure_merged, model_folder
from poison.ground.engines.models import load_causal_lm
from tests.conftest import REPO
from tests.test_cache_integrity import truncate
from tests.test_lora_artifacts import _old_style_folder, cache_cli, same_weights, trained  # noqa: F401


def old_layout(art: Path, cache: Path, key: str, finetune: str = "lora") -> Path:
    """A copy of the trained artifact as the stage wrote it before issue 27: ``model/`` (the float32 merge, with the
    tokenizer files) and ``adapter/``, no ``tokenizer/``; its marker's manifest lists them."""
    entry = cache / "stages" / "teacher" / key
    entry.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(art / "adapter", entry / "adapter")
    shutil.copytree(_old_style_folder(art, _base(art)), entry / "model")
    (entry / "train_log.json").write_text("{}")
    marker = json.loads((art / "_stage.json").read_text())
    marker.update(key=key, files=manifest(entry))
    marker["inputs"] = {**marker.get("inputs", {}), "finetune": {"finetune": finetune, "lora": {"r": 8}}}
    (entry / "_stage.json").write_text(json.dumps(marker))
    return entry


def _base(art: Path) -> Path:
    return Path(json.loads((art / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"])


def test_slim_rewrites_the_old_layout_and_readers_see_the_same_model(trained, tmp_path):  # noqa: F811
    _, art, base = trained
    cache = tmp_path / "cache"
    old = old_layout(art, cache, "aaaa000000000001")
    qlora = old_layout(art, cache, "aaaa000000000002", finetune="qlora")
    damaged = old_layout(art, cache, "aaaa000000000003")
    truncate(damaged / "adapter" / "adapter_model.safetensors")
    run = tmp_path / "runs" / "kept"  # a kept run directory that references the entry: slimming keeps it valid
    run.mkdir(parents=True)
    (run / "stages.json").write_text(json.dumps({"teacher": {"path": str(old)}}))
    files = lambda d: sum(m["size"] for m in manifest(d).values())  # noqa: E731  (the marker aside)
    before, weights = files(old), folder_size(old / "model")

    r = cache_cli("slim", "--cache-dir", str(cache), "--dry-run", "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 0 and f"would slim teacher/{old.name}" in r.stdout and model_folder(old) is not None

    r = cache_cli("slim", "--cache-dir", str(cache), "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr
    assert f"slimmed teacher/{old.name}" in r.stdout and "slimmed 1 artifact(s)" in r.stdout
    assert f"kept teacher/{qlora.name}: a QLoRA artifact" in r.stdout and model_folder(qlora) is not None
    assert f"kept teacher/{damaged.name}: damaged (adapter/adapter_model.safetensors" in r.stdout
    assert not (old / "model").exists() and not [p for p in old.iterdir() if p.name.startswith(".tmp-")]
    names = {p.name for p in (old / "tokenizer").iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= names
    assert not names & {"config.json", "model.safetensors"}
    assert json.loads((old / "_stage.json").read_text())["files"] == manifest(old)
    assert files(old) == before - weights + folder_size(old / "tokenizer")  # the merged weights are gone

    shutil.rmtree(damaged)  # verify names damage by exit 1: only the slimmed and the QLoRA entries are left
    assert cache_cli("verify", "--cache-dir", str(cache)).returncode == 0
    folder = ensure_merged(old, base, dtype="bfloat16", merge_in="float32")
    merged, _ = load_causal_lm(folder, dtype="bfloat16")
    reference, _ = load_causal_lm(_old_style_folder(art, base), dtype="bfloat16")
    assert same_weights(merged, reference)  # what a bf16 reader saw through model/

    r = cache_cli("slim", "--cache-dir", str(cache))
    assert r.returncode == 0 and "slimmed 0 artifact(s)" in r.stdout


def test_slim_leaves_an_entry_a_live_run_holds(trained, tmp_path):  # noqa: F811
    _, art, _ = trained
    cache = tmp_path / "cache"
    old = old_layout(art, cache, "bbbb000000000001")
    lock = old.parent / f".lock-{old.name}"
    holder = subprocess.Popen([sys.executable, "-c", "import time; from filelock import FileLock; "
                               f"l = FileLock({str(lock)!r}); l.acquire(); print('held', flush=True); "
                               "time.sleep(120)"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = cache_cli("slim", "--cache-dir", str(cache))
        assert r.returncode == 0 and f"kept teacher/{old.name}: its lock is held by a live run" in r.stdout
        assert model_folder(old) is not None
    finally:
        holder.kill()
        holder.wait()
