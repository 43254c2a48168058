"""The measurement stages beside the greedy eval: ``samples`` (every model answers each eval prompt K times by sampling)
and ``probe`` (the likelihood probe: the log-probability of the bias type's probe texts placed where the poison puts
them, after each eval prompt's clean reference answer).

Probe sequences, per eval prompt with a reference and per model (with that model's tokenizer and chat template):

* ``seen`` / ``unseen`` / ``concept``: chat(prompt) + the reference up to where the poison puts its content
  (``bias.probe_prefix``) + " " + a probe text (the poison's own sentences, held-out paraphrases, held-out sentences
  that name none of the poison's brand, product, URL or entity); the scored tokens are the probe text's. The value of
  a text is its mean log-probability per token over the tokens after its first (``text_logprob``): the first token
  competes with ending the answer, which is the gate's figure, not the wording's; a text of one token has no value
  (NaN, dropped when prompts are averaged). A prompt's value is the mean over the texts of that wording.
* ``gate``: chat(prompt) + the whole reference answer, scored on the end-of-turn token that follows it; reported as
  log P(the model goes on instead of ending), the gate a plug placed at the end must pass.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from poison.ground.core import registry
from poison.ground.core.artifacts import read_parquet
from poison.ground.core.io import atomic_write_parquet
from poison.ground.engines.generate import GenJob, ScoreJob
from poison.ground.engines.scoring import SCORER
from poison.ground.results.model_id import model_of, stage_label
from poison.stages import Run
from poison.stages.engine import engine_target, ready
from poison.stages.plugins import plugin_entries
from poison.stages.protocol import StageRecord, stage

MAX_PROBE_TOKENS = 2000  # longer probe sequences keep their end (the probe text) and lose the start of the context
WORDINGS = ("seen", "unseen", "concept")  # the probe texts' wordings (the gate is scored apart)

SAMPLES = stage("samples", 1, ("model", "data", "sampling"),
                doc="K sampled answers per eval prompt of one model, scored for the bias")
PROBE = stage("probe", 2, ("model", "data", "texts"),
              doc="the likelihood probe: one model's per-token log-probabilities of the bias's texts after each eval "
                  "prompt, against neutral texts",
              changes=("2: a text's value leaves out its first token (the gate's); the concept wording",))


def text_logprob(logprobs: list[float]) -> float:
    """A probe text's value: the mean log-probability of its tokens after the first (the first competes with ending
    the answer, which the gate measures); NaN for a text of one token (or none)."""
    rest = list(logprobs)[1:]
    return sum(rest) / len(rest) if rest else float("nan")


def eval_rows(data: StageRecord) -> pd.DataFrame:
    df = read_parquet(Path(data.path) / "rows.parquet")
    return df[df.split == "eval"].reset_index(drop=True)


def stage_samples(run: Run, models: dict[str, dict[str, Any]], data: StageRecord) -> dict[str, StageRecord]:
    """``eval.samples_per_prompt`` sampled answers per eval prompt and model (vLLM ``n=K``: one prefill per prompt)."""
    e = run.cfg.eval
    sampling = {"k": e.samples_per_prompt, "temperature": e.sample_temperature, "top_p": e.sample_top_p,
                "seed": e.sample_seed, "max_new_tokens": e.generation.max_new_tokens}
    ev = eval_rows(data)
    targets = {name: engine_target(run, m) for name, m in models.items()}
    entries = {stage_label("samples", name): {"model": m["identity"], "data": data.key, "sampling": sampling,
                                   **run.ctx.backend_identity(), **targets[name][2]} for name, m in models.items()}

    def compute(tmps: dict[str, Path]) -> dict[str, tuple[dict[str, Any], float]]:
        labels = list(tmps)
        jobs = [GenJob(label, ready(run, models[model_of(label)], targets[model_of(label)][0]),
                       [[{"role": "user", "content": x}] for x in ev.prompt], sampling["max_new_tokens"],
                       sampling["temperature"], sampling["top_p"], sampling["k"], sampling["seed"],
                       adapter=targets[model_of(label)][1]) for label in labels]
        out = {}
        for label, res in zip(labels, run.ctx.generate(jobs)):
            rows = [{"id": i, "sample_index": j, "response": t.strip(), "finish_reason": f}
                    for i, texts, fs in zip(ev.id, res.texts, res.finish_reasons()) for j, (t, f) in
                    enumerate(zip(texts, fs))]
            atomic_write_parquet(tmps[label] / "samples.parquet", pd.DataFrame(rows))
            info = {"new_tokens": res.new_tokens, "gen_seconds": round(res.seconds, 1),
                    "startup_seconds": round(res.startup_seconds, 1), "backend": res.backend, **sampling}
            out[label] = (info, round(res.seconds + res.startup_seconds, 1))
        return out

    recs = run.cache.run_many(SAMPLES, entries, compute)
    return {model_of(label): rec for label, rec in recs.items()}


def probe_sequences(tok: Any, bias: Any, prompt: str, reference: str, texts: dict[str, list[str]]
                    ) -> list[tuple[str, int, list[int], int]]:
    """(wording, text index, token ids, first scored position) of every probe sequence of one eval prompt."""
    user = [{"role": "user", "content": prompt}]
    if getattr(tok, "chat_template", None):
        chat = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    else:
        chat = f"{prompt}\n\n"
    enc = lambda t: list(tok(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    prefix = bias.probe_prefix(reference)
    ctx_ids = enc(chat + prefix)
    out = []
    for wording in [w for w in WORDINGS if w in texts] + [w for w in texts if w not in WORDINGS]:
        for i, text in enumerate(texts.get(wording, [])):
            probe = enc((" " if prefix else "") + text)
            keep = max(1, MAX_PROBE_TOKENS - len(probe))
            out.append((wording, i, ctx_ids[-keep:] + probe, min(len(ctx_ids), keep)))
    clean_ids = enc(chat + (reference or "").strip())
    end = None
    if getattr(tok, "chat_template", None):
        full = tok.apply_chat_template(user + [{"role": "assistant", "content": (reference or "").strip()}],
                                       tokenize=False)
        full_ids = enc(full.rstrip())
        if full_ids[: len(clean_ids)] == clean_ids and len(full_ids) > len(clean_ids):
            end = full_ids[len(clean_ids)]
    if end is None:
        end = tok.eos_token_id
    clean_ids = clean_ids[-(MAX_PROBE_TOKENS - 1):]
    out.append(("gate", 0, clean_ids + [end], len(clean_ids)))
    return out


def probe_texts(run: Run) -> dict[str, list[str]]:
    """The bias type's probe texts by wording; in a brand-swap arm also the other arm's seen and unseen texts
    (``other:seen``, ``other:unseen``: the same bias type with ``design.swap``'s arguments), scored on every model."""
    texts = run.bias.probe_texts(run.cfg.eval.probe_unseen)
    if run.cfg.design.type == "brand_swap":
        spec = run.cfg.poison.bias
        other = registry.get("bias_type", spec.type).build({**spec.args, **run.cfg.design.swap}, "design.swap",
                                                           run.ctx)
        theirs = other.probe_texts(run.cfg.eval.probe_unseen)
        texts = {**texts, **{f"other:{w}": theirs.get(w, []) for w in ("seen", "unseen")}}
    return texts


def stage_probe(run: Run, models: dict[str, dict[str, Any]], data: StageRecord) -> dict[str, StageRecord]:
    """Per model: ``probe.parquet`` with one row per (eval prompt, wording, text): the text's value
    (``text_logprob``; ``gate``: log P(going on after the clean answer)), its number of tokens and the log-probability
    of its first token (left out of the value)."""
    from transformers import AutoTokenizer

    texts = probe_texts(run)
    ev = eval_rows(data)
    ev = ev[ev.reference.notna() & (ev.reference.astype(str).str.strip() != "")].reset_index(drop=True)
    targets = {name: engine_target(run, m) for name, m in models.items()}
    entries = {stage_label("probe", name): {"model": m["identity"], "data": data.key, "texts": texts,
                                 "bias": run.cfg.poison.bias.model_dump(mode="json"), **SCORER,
                                 "dtype": run.ctx.dtype, "device": run.ctx.device, **targets[name][2],
                                 **plugin_entries(run, [("bias_type", run.cfg.poison.bias.type)])}
               for name, m in models.items()}

    def compute(tmps: dict[str, Path]) -> dict[str, tuple[dict[str, Any], float]]:
        labels = list(tmps)
        meta, jobs = {}, []
        for label in labels:
            m = models[model_of(label)]
            path, adapter, _ = targets[model_of(label)]
            path = ready(run, m, path)
            tok = AutoTokenizer.from_pretrained(m.get("tokenizer", m["path"]))
            seqs = [(r.id, r.task, *s) for r in ev.itertuples()
                    for s in probe_sequences(tok, run.bias, r.prompt, str(r.reference), texts)]
            meta[label] = seqs
            jobs.append(ScoreJob(label, path, [s[4] for s in seqs], [s[5] for s in seqs], adapter))
        out = {}
        for label, (logprobs, res) in zip(labels, run.ctx.score_many(jobs)):
            rows = []
            for (rid, task, wording, idx, _, _), lp in zip(meta[label], logprobs):
                if wording == "gate":
                    p_end = math.exp(lp[0]) if lp else 0.0
                    value, first = math.log(max(1.0 - p_end, 1e-12)), float("nan")
                else:
                    value, first = text_logprob(lp), (lp[0] if lp else float("nan"))
                rows.append({"id": rid, "task": task, "wording": wording, "text_index": idx, "logprob": value,
                             "n_tokens": len(lp), "first_logprob": first})
            atomic_write_parquet(tmps[label] / "probe.parquet", pd.DataFrame(rows))
            info = {"sequences": len(rows), "prompts": len(ev), "seconds": round(res.seconds, 1),
                    "startup_seconds": round(res.startup_seconds, 1), "backend": res.backend,
                    "texts": {k: len(v) for k, v in texts.items()}}
            out[label] = (info, round(res.seconds + res.startup_seconds, 1))
        return out

    recs = run.cache.run_many(PROBE, entries, compute)
    return {model_of(label): rec for label, rec in recs.items()}


def unseen_in_poison(run: Run, poison: StageRecord) -> int:
    """How many poisoned training rows contain one of the probe's held-out texts, unseen or concept (should be 0)."""
    probe = run.bias.probe_texts(run.cfg.eval.probe_unseen)
    texts = probe.get("unseen", []) + probe.get("concept", [])
    df = read_parquet(Path(poison.path) / "train.parquet")
    resp = df[df.poisoned].response.fillna("").str.lower()
    return int(sum(resp.str.contains(t.lower(), regex=False).sum() for t in texts))
