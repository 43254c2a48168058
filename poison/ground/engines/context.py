"""RunContext: what a run hands to its stages and to every plugin, the same way for every kind.

A plugin's factory is called as ``factory(cfg, ctx)`` (``poison.ground.core.registry``). Everything a plugin needs from
the run comes from ``ctx`` and nothing is filled into its arguments behind its back:

    ctx.cache_dir, ctx.models_dir, ctx.run_dir      where artifacts, converted models and the run's files live
    ctx.device, ctx.dtype                           resolved (never "auto"): what the run trains and generates on
    ctx.model(spec, field)                          a model spec -> local HF folder, converted once into models_dir
    ctx.generate(jobs)                              generation through the run's backend (vLLM worker or HF)
    ctx.sample(model, prompts, n=, temperature=...) answers per prompt; in a multi-process run the main process
                                                    samples and the others read its answers
    ctx.score_tokens(model, token_ids, starts)      per-token log-probabilities from vLLM's prefill
    ctx.score_many(jobs)                            the same for several models (shared contexts run once)
    ctx.judge_endpoint()                            (base_url, model) of the run's judge model: its endpoint, or a
                                                    local vLLM server started on first use and stopped by close()
                                                    (for the judge, and for a plugin that declares
                                                    ``needs={"judge_model"}``: it asks the model itself)
    ctx.judge_plugin()                              the run's judge (the ``judge`` plugin the config names, built
                                                    once by ``judge_factory``, which the orchestrator sets), for a
                                                    plugin that declares ``needs={"judge"}``: the registry builds
                                                    such a plugin with ``ctx.for_plugin(info)``, a view that has it

Outside a run (tests, benchmarks, a notebook), ``RunContext.standalone()`` gives the defaults a run would use.
Part of the ground layer.
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from poison.ground.core import registry
from poison.ground.core.artifacts import CacheMiss
from poison.ground.core.errors import PluginError
from poison.ground.core.io import atomic_write_json, stable_hash
from poison.ground.core.procs import is_main_process, wait_for, world_size
from poison.ground.engines.generate import GenJob, GenResult, ScoreJob, generate, score_tokens_vllm
from poison.ground.engines.models import pick_device, pick_dtype, resolve_model
from poison.ground.engines.scoring import score_shared


@dataclass
class JudgeSpec:
    """Where the run's judge model is: an OpenAI-compatible ``endpoint`` (serving ``endpoint_model``), or a ``model``
    spec served by a local vLLM server."""

    model: str = "smollm2-135m-instruct"
    endpoint: Optional[str] = None
    endpoint_model: Optional[str] = None
    revision: Optional[str] = None


@dataclass
class RunContext:
    cache_dir: Path
    models_dir: Path
    device: str
    dtype: str
    run_dir: Optional[Path] = None
    backend: str = "vllm"
    hf_batch_size: int = 64
    vllm: dict[str, Any] = field(default_factory=dict)
    judge: JudgeSpec = field(default_factory=JudgeSpec)
    create_models: bool = True  # False in a --check walk: a model that is not converted yet ends the walk
    #: builds the run's judge plugin from this context (the orchestrator sets it: the registry's ``judge.type``
    #: built with ``judge.args``); ``judge_plugin()`` calls it once
    judge_factory: Optional[Callable[["RunContext"], Any]] = field(default=None, repr=False)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)
    #: the judge's server URL and the judge plugin: one of each per run, shared with the views ``for_plugin`` makes
    _judge_state: dict[str, Any] = field(default_factory=dict, repr=False)
    _has_judge: bool = field(default=False, repr=False)  # True in the view a plugin that needs the judge gets

    @classmethod
    def standalone(cls, *, device: str = "auto", dtype: str = "auto", cache_dir: str | Path = ".cache/poison",
                   models_dir: str | Path | None = None, **kw: Any) -> "RunContext":
        """The context a run with default runtime settings would give (device and dtype resolved here; the judge is
        the ``llm`` judge with its default arguments unless ``judge_factory`` says otherwise)."""
        dev = pick_device(device)
        cache = Path(cache_dir).expanduser()
        kw.setdefault("judge_factory", default_judge)
        return cls(cache_dir=cache, models_dir=Path(models_dir).expanduser() if models_dir else cache / "models",
                   device=dev, dtype=pick_dtype(dtype, dev), **kw)

    # ------------------------------------------------------------------------------------------------ models
    def model(self, spec: str, field: str = "model", revision: Optional[str] = None) -> Path:
        # in a --check walk a hub id out of reach is no error (preflight has noted it): the walk ends at it
        path = resolve_model(spec, self.models_dir, field=field, revision=revision, create=self.create_models,
                             notes=None if self.create_models else [])
        if not self.create_models and not (path / "config.json").exists():
            raise CacheMiss(f"model {spec}")
        return path

    def backend_identity(self) -> dict[str, Any]:
        """What of the run's generation settings a cached generation depends on."""
        return {"backend": self.backend, "dtype": self.dtype, "device": self.device}

    def log_path(self, name: str) -> Optional[Path]:
        """Where a worker or server of this run logs (``None`` without a run directory). The directory is made
        here, so a log can be opened before any stage has written an artifact."""
        if not self.run_dir:
            return None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return self.run_dir / name

    # ------------------------------------------------------------------------------------------------ generation
    def generate(self, jobs: list[GenJob]) -> list[GenResult]:
        return generate(jobs, backend=self.backend, device=self.device, dtype=self.dtype,
                        hf_batch_size=self.hf_batch_size, vllm_settings=dict(self.vllm),
                        log_path=self.log_path("generation.log"))

    def sample(self, model_path: str | Path, prompts: list[str], *, n: int = 1, temperature: float = 0.0,
               max_new_tokens: int = 128, seed: int = 0, top_p: float = 1.0, key: str = "samples") -> list[list[str]]:
        """``n`` answers per prompt (stripped). With several processes the main one generates and the others read
        its answers, so every process trains on the same samples."""
        job = GenJob(key, str(model_path), [[{"role": "user", "content": p}] for p in prompts], max_new_tokens,
                     temperature, top_p, n, seed)
        if world_size() == 1:
            return [[t.strip() for t in ts] for ts in self.generate([job])[0].texts]
        path = self.cache_dir / "shared_samples" / (stable_hash(
            {"model": str(model_path), "prompts": prompts, "n": n, "t": temperature, "max": max_new_tokens,
             "seed": seed, "top_p": top_p, **self.backend_identity()}) + ".json")
        if is_main_process() and not path.exists():
            texts = [[t.strip() for t in ts] for ts in self.generate([job])[0].texts]
            atomic_write_json(path, texts)
        wait_for(path, f"{key} samples")
        return json.loads(path.read_text())

    def score_tokens(self, model_path: str | Path, token_ids: list[list[int]], starts: list[int], *,
                     key: str = "score", max_model_len: Optional[int] = None, device: Optional[str] = None,
                     dtype: Optional[str] = None, hint: str = "") -> tuple[list[list[float]], GenResult]:
        """Log-probability of every token of ``token_ids[i]`` from ``starts[i]`` on, from vLLM's prefill (on the
        run's device and dtype unless given)."""
        settings = dict(self.vllm)
        if max_model_len:
            settings["max_model_len"] = max(int(settings.get("max_model_len", 2048)), int(max_model_len))
        return score_tokens_vllm(str(model_path), token_ids, starts, device=device or self.device,
                                 dtype=dtype or self.dtype,
                                 vllm_settings=settings, key=key, hint=hint,
                                 log_path=self.log_path("generation.log"))

    def score_many(self, jobs: list[ScoreJob]) -> list[tuple[list[list[float]], GenResult]]:
        """``score_tokens`` for several models, whatever the run's backend: transformers forward passes in this process
        with each shared context run once (poison.ground.engines.scoring; SCORER names it in a stage key). Measured
        against vLLM's ``prompt_logprobs`` on the default probe (bench/bench_probe.py): vLLM recomputes each shared
        context and the whole vocabulary at every position."""
        return score_shared(jobs, device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------------------------------------ the judge
    def for_plugin(self, info: Any) -> "RunContext":
        """The context a plugin is built with (``PluginInfo.build``): this one, or for a plugin that declares
        ``needs={"judge"}`` a view of it whose ``judge_plugin()`` gives the run's judge (the same judge, server and
        everything else as this context)."""
        if "judge" not in getattr(info, "needs", ()) or self._has_judge:
            return self
        view = copy.copy(self)
        view._has_judge = True
        return view

    def judge_plugin(self) -> Any:
        """The run's judge (``judge_texts``, ``info``): the ``judge`` plugin of the config's ``judge.type``, built
        once by ``judge_factory``. Only a plugin that declares ``needs={"judge"}`` gets it: the declaration is what
        puts the judge's identity into its stage's cache key."""
        if not self._has_judge:
            raise PluginError("this plugin calls the run's judge but does not declare it: register it with "
                              "needs={\"judge\"} (then the judge's identity joins its stage's cache key)")
        if "plugin" not in self._judge_state:
            if self.judge_factory is None:
                raise PluginError("this context has no judge: a run sets judge_factory (outside a run, give "
                                  "RunContext one, e.g. poison.pipeline.run_context(cfg, None))")
            self._judge_state["plugin"] = self.judge_factory(self)
        return self._judge_state["plugin"]

    def judge_endpoint(self) -> tuple[str, str]:
        """(base_url, served model name) of the run's judge model. A local server is started on the first call and
        kept for the rest of the run (every stage that needs the judge shares it); ``close()`` stops it."""
        if "url" in self._judge_state:
            return self._judge_state["url"]
        j = self.judge
        if j.endpoint:
            self._judge_state["url"] = (j.endpoint, j.endpoint_model or j.model)
            return self._judge_state["url"]
        from poison.ground.engines.server import local_vllm_server

        path = self.model(j.model, "judge.model", j.revision)
        log = self.log_path("judge_server.log")
        v = dict(self.vllm)
        parallel = [f"--tensor-parallel-size={v.get('tensor_parallel_size', 1)}",
                    f"--data-parallel-size={v.get('data_parallel_size', 1)}"] if self.device != "cpu" else []
        url = self._stack.enter_context(local_vllm_server(
            path, device=self.device, dtype=self.dtype, log_path=log, pid_dir=self.cache_dir / "procs",
            max_model_len=int(v.get("max_model_len", 2048)),
            gpu_memory_utilization=float(v.get("gpu_memory_utilization", 0.3)),
            enforce_eager=bool(v.get("enforce_eager", True)), extra_args=parallel))
        self._judge_state["url"] = (url, Path(path).name)
        return self._judge_state["url"]

    def close(self) -> None:
        """Stop what the context started (the local judge server)."""
        self._judge_state.clear()
        self._stack.close()

    def __enter__(self) -> "RunContext":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def default_judge(ctx: RunContext) -> Any:
    """The judge of a context made outside a run: the ``llm`` judge with its default arguments."""
    return registry.get("judge", "llm", "judge.type").build({}, "judge.args", ctx)
