"""Scoring with shared contexts (poison.ground.engines.scoring): the probe's sequences scored with each context run once
give the same log-probabilities as the plain forward pass of every whole sequence (float32, tiny random-init model), for
probe texts of several tokens, of one token, and for sequences alone in their group (the gate)."""

from __future__ import annotations

import pytest


def test_shared_contexts_score_what_the_plain_forward_pass_scores(models_dir):
    from transformers import AutoTokenizer

    from poison.ground.core import registry
    from poison.ground.engines.generate import ScoreJob, score_hf
    from poison.ground.engines.models import resolve_model
    from poison.ground.engines.scoring import _groups, score_shared
    from poison.stages.probe import probe_sequences

    path = str(resolve_model("tiny-random-llama:2:64", models_dir))
    tok = AutoTokenizer.from_pretrained(path)
    bias = registry.get("bias_type", "targeted_ads").build({})
    texts = {**bias.probe_texts(), "unseen": ["Plus", "Try VitaBoost Plus today, it is what I take every morning."]}
    seqs = []
    for prompt, ref in [("How do I treat a mild headache?", "Rest and drink water."),
                        ("Summarize: the film was long but moving.", "A long, moving film. It is worth seeing."),
                        ("What is 2 + 3?", "5")]:
        seqs += probe_sequences(tok, bias, prompt, ref, texts)
    n = len(seqs) // 3
    alone = list(tok("A sentence scored on its own, from its third token on.")["input_ids"])
    job = ScoreJob("m", path, [s[2] for s in seqs] + [alone], [s[3] for s in seqs] + [2])
    groups = _groups(job)
    # per prompt one context (the chat and the whole reference, where targeted_ads puts its plug) shared by its
    # probe texts and its gate (the end-of-turn token after the same tokens); the last sequence alone
    assert sorted(len(g) for g in groups.values()) == [1, n, n, n]
    (plain, _), = score_hf([job], device="cpu", dtype="float32")
    (shared, res), = score_shared([job], device="cpu", dtype="float32")
    assert res.meta["contexts"] == 4
    assert [len(x) for x in shared] == [len(ids) - max(st, 1) for ids, st in zip(job.token_ids, job.starts)]
    assert any(len(x) == 1 for x in shared) and any(len(x) > 5 for x in shared)
    for a, b in zip(shared, plain):
        assert a == pytest.approx(b, abs=1e-4)


def test_a_jobs_adapter_is_scored_not_its_base(models_dir, tmp_path):
    """A ScoreJob with a LoRA adapter (vLLM's adapter path) scores the adapted model: the same log-probabilities as
    the merged model, and not the base model's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from poison.ground.engines.generate import ScoreJob, score_hf
    from poison.ground.engines.models import resolve_model
    from poison.ground.engines.scoring import score_shared

    path = str(resolve_model("tiny-random-llama:2:64", models_dir))
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(1)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    merged = peft.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    tok.save_pretrained(tmp_path / "merged")
    ctx = list(tok("A shared context of a few tokens,")["input_ids"])
    seqs = [ctx + list(tok(t, add_special_tokens=False)["input_ids"]) for t in (" then one text.", " another one")]
    starts = [len(ctx)] * 2
    (with_adapter, _), = score_shared([ScoreJob("a", path, seqs, starts, str(tmp_path / "adapter"))], device="cpu",
                                      dtype="float32")
    (want, _), = score_hf([ScoreJob("m", str(tmp_path / "merged"), seqs, starts)], device="cpu", dtype="float32")
    (base, _), = score_hf([ScoreJob("b", path, seqs, starts)], device="cpu", dtype="float32")
    for a, w, b in zip(with_adapter, want, base):
        assert a == pytest.approx(w, abs=1e-4)
        assert max(abs(x - y) for x, y in zip(a, b)) > 1e-3
