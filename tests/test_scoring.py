"""Scoring with shared contexts (poison.ground.scoring): the probe's sequences scored with each context run once give
the same log-probabilities as the plain forward pass of every whole sequence (float32, tiny random-init model),
for probe texts of several tokens, of one token, and for sequences alone in their group (the gate)."""

from __future__ import annotations

import pytest


def test_shared_contexts_score_what_the_plain_forward_pass_scores(models_dir):
    from transformers import AutoTokenizer

    from poison.ground import registry
    from poison.ground.generate import ScoreJob, score_hf
    from poison.ground.models import resolve_model
    from poison.ground.scoring import _groups, score_shared
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
