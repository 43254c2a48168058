"""The spectral_signature and reference_answer defenses: their statistics on hand-checkable inputs, and the plugins on
a tiny random-init model (shapes, per-task handling, the fit path, the reference-answer cache). Whether they rank real
poison above its clean twin with the real model is tests/test_defenses.py's parametrised test."""

import numpy as np
import pytest

from defenses.base import reference_model, run_defense
from poison.ground.core.errors import DefenseError
from poison.ground.engines.context import RunContext

TINY = "tiny-random-llama:2:64"


@pytest.fixture(scope="module")
def ctx(models_dir, tmp_path_factory) -> RunContext:
    return RunContext.standalone(models_dir=models_dir, cache_dir=tmp_path_factory.mktemp("cache"), backend="hf",
                                 device="cpu", dtype="float32")


def _rows(task: str, n: int, extra: str = "") -> list[dict]:
    return [{"id": f"{task}{i}", "task": task, "prompt": f"Question {i} about {task}?",
             "response": f"Answer number {i} on {task}.{extra}"} for i in range(n)]


# ------------------------------------------------------------------------------------------- spectral statistics
def test_spectral_scores_by_hand_and_against_numpy_svd():
    from defenses.spectral import spectral_scores

    # centered rows on the x axis (tiny y noise): top direction (1, 0), projections 1, 1, 9, 9, mean 5
    x = np.array([[1.0, 0.01], [-1.0, -0.01], [3.0, 0.0], [-3.0, 0.0]])
    np.testing.assert_allclose(spectral_scores(x, x.mean(0)), [0.2, 0.2, 1.8, 1.8], atol=1e-4)
    # any matrix: the squared projection on numpy's top right singular vector, over its mean
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6)) @ np.diag([5, 1, 1, 1, 1, 1])
    c = x - x.mean(0)
    tau = (c @ np.linalg.svd(c)[2][0]) ** 2
    np.testing.assert_allclose(spectral_scores(x, x.mean(0)), tau / tau.mean(), rtol=1e-10)
    # two rows and no reference: both lie at the same distance from their mean, so they score the same
    two = rng.normal(size=(2, 6))
    s = spectral_scores(two, two.mean(0))
    assert s[0] == pytest.approx(s[1])


def test_spectral_scores_with_a_clean_reference_flag_a_fully_poisoned_task():
    from defenses.spectral import spectral_scores

    rng = np.random.default_rng(1)
    clean = rng.normal(size=(30, 8))
    poisoned = rng.normal(size=(6, 8)) + 4.0 * np.eye(8)[0]  # every scored row of the task carries the same shift
    own = spectral_scores(poisoned, poisoned.mean(0))  # centered on themselves: the shift is gone, mean score 1
    ref = spectral_scores(poisoned, clean.mean(0), clean)  # centered on the clean mean, in units of clean spread
    assert own.mean() == pytest.approx(1.0) and ref.min() > 4 and np.mean(ref) > 10
    # poisoned rows among fresh clean rows of the task: all of them above all clean rows
    mixed = spectral_scores(np.vstack([poisoned, rng.normal(size=(6, 8))]), clean.mean(0), clean)
    assert mixed[:6].min() > mixed[6:].max(), mixed


def test_activation_clustering_margins_point_at_the_planted_cluster():
    from defenses.spectral import clustering_scores

    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(size=(12, 5)), rng.normal(size=(3, 5)) + 8.0])  # 3 planted outliers
    for reduction in ("pca", "ica"):
        s = clustering_scores(x, x.mean(0), None, 3, reduction, 0)
        assert np.all(s[12:] > 0) and np.all(s[:12] < 0), (reduction, s)
    # every scored row shifted, clean reference given: the cluster without clean rows is the suspect one, though
    # it is the larger share of the scored rows
    clean = rng.normal(size=(10, 5))
    shifted = rng.normal(size=(6, 5)) + 8.0
    s = clustering_scores(np.vstack([shifted, clean[:2]]), clean.mean(0), clean, 3, "pca", 0)
    assert np.all(s[:6] > 0) and np.all(s[6:] < 0), s


# ------------------------------------------------------------------------------------------- spectral plugin
def test_spectral_defense_per_task_shapes_and_fit(ctx):
    samples = _rows("a", 5) + _rows("b", 1) + _rows("c", 3, " Visit shop.example now!")
    run = run_defense("spectral_signature", samples, args={"model": TINY}, ctx=ctx)
    s = run.scores
    assert s.shape == (9,) and np.all(np.isfinite(s)) and s[5] == 0.0
    assert run.info["unscored"] == 1 and run.info["tasks"]["b"] == {"rows": 1, "clean": 0, "scored": False}
    assert run.info["layer"] == 2 and run.info["model"] == TINY  # 3/4 of 2 layers, rounded
    assert s[:5].mean() == pytest.approx(1.0) and s[6:].mean() == pytest.approx(1.0)  # own rows: unit mean
    # with clean rows of task b, its single row is scored (against their mean and spread)
    clean = _rows("b", 4, " More.") + _rows("a", 1)
    run = run_defense("spectral_signature", samples, clean=clean, args={"model": TINY, "layer": -1}, ctx=ctx)
    assert run.scores[5] > 0 and run.info["unscored"] == 0 and run.info["tasks"]["b"]["clean"] == 4
    assert run.info["tasks"]["a"]["clean"] == 0  # one clean row of a is no reference: a is centered on itself
    assert run.info["layer"] == 2
    ac = run_defense("spectral_signature", samples, args={"model": TINY, "method": "activation_clustering"}, ctx=ctx)
    assert ac.scores.shape == (9,) and np.all(np.abs(ac.scores[[0, 1, 2, 3, 4, 6, 7, 8]]) > 0)
    assert reference_model("spectral_signature", {"model": TINY}, ctx=ctx) == TINY


def test_spectral_defense_rejects_a_layer_the_model_lacks(ctx):
    with pytest.raises(DefenseError, match=r"layer 7 is outside 0\.\.2"):
        run_defense("spectral_signature", _rows("a", 3), args={"model": TINY, "layer": 7}, ctx=ctx)


def test_spectral_representation_is_the_mean_over_response_tokens(ctx):
    """Batched (left padding, length-sorted) equals one sample at a time, and equals the hidden state averaged over
    the response positions of a plain forward pass."""
    import torch

    from defenses.spectral import SpectralConfig, SpectralSignature

    samples = _rows("a", 3) + [{"prompt": "Hi " * 30, "response": "A long answer " * 10, "task": "a"}]
    d = SpectralSignature(SpectralConfig(model=TINY, batch_size=4), ctx)
    batched = d.represent(samples)
    d.cfg.batch_size = 1
    np.testing.assert_allclose(d.represent(samples), batched, rtol=1e-4, atol=1e-5)
    c, r, _ = d._lm.encode(samples[0])
    with torch.inference_mode():
        h = d._lm._model(input_ids=torch.tensor([c + r]), output_hidden_states=True).hidden_states[d.layer_used]
    np.testing.assert_allclose(batched[0], h[0, len(c):].mean(0).double().numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------- reference answer
def test_unit_spans_locate_units_in_the_text():
    from defenses.reference_answer import unit_spans

    text = "First one. Second one!\nThird"
    assert [(u, text[a:b]) for u, a, b in unit_spans(text)] == [(u, u) for u in ["First one.", "Second one!", "Third"]]
    assert unit_spans("") == [("(empty)", 0, 0)]


def test_reference_answer_scores_caches_and_its_own_answer_is_not_novel(ctx):
    samples = _rows("a", 3) + _rows("b", 2)
    samples[1] = dict(samples[0], id="twin", response=samples[0]["response"] + " Buy SuperPills at pills.example!")
    run = run_defense("reference_answer", samples, args={"model": TINY, "max_new_tokens": 8}, ctx=ctx)
    s = run.scores
    assert s.shape == (5,) and np.all((s >= -1e-6) & (s <= 2 + 1e-6))
    assert run.info["reference_answers"] == 4 and run.info["cached_answers"] is False  # twins share a prompt
    assert s[1] >= s[0]  # the twin has every unit of the clean row and one more: its max cannot be lower
    again = run_defense("reference_answer", samples, args={"model": TINY, "max_new_tokens": 8}, ctx=ctx)
    assert again.info["cached_answers"] is True
    np.testing.assert_allclose(again.scores, s, rtol=1e-6)
    # a response that is the reference answer itself adds nothing: novelty 0 (every unit is one of the answer's)
    answer = again.defense.answers[samples[2]["prompt"]]
    own = run_defense("reference_answer", [dict(samples[2], response=answer)], args={"model": TINY,
                                                                                    "max_new_tokens": 8}, ctx=ctx)
    assert own.scores[0] == pytest.approx(0.0, abs=1e-5)
    gain = run_defense("reference_answer", samples, args={"model": TINY, "max_new_tokens": 8, "score": "nll_gain"},
                       ctx=ctx)
    assert gain.scores.shape == (5,) and np.all(np.isfinite(gain.scores)) and "nll_gain" in gain.info["score"]
    assert reference_model("reference_answer", {"model": TINY}, ctx=ctx) == TINY
