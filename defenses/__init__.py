"""Training-data defenses (plugins registered with ``@poison.ground.core.registry.defense``).

A defense receives training samples (dicts with prompt, response, task) and returns one finite suspicion score per
sample, higher = more suspicious, optionally after ``fit`` on trusted clean samples (``defenses.base.Defense``).
``defenses.base.run_defense`` runs one by name; ``poison.ground.results.stats`` turns scores and poison labels into
AUROC, TPR at 1 % FPR and precision/recall at a threshold.

Built-ins (this module is the entry point that registers them):
- ``perplexity``      log-perplexity of the response given the prompt under a reference LM (defenses.perplexity)
- ``bias_classifier`` MiniLM embeddings + logistic head trained on defender-written generic injections
                      (defenses.classifier)
- ``llm_autorater``   a judge model behind an OpenAI-compatible endpoint (defenses.autorater; by default the run's
                      judge, a local vLLM server started through the run context)
- ``spectral_signature`` per-task representation outliers of a reference LM's hidden states: spectral signatures or
                      activation clustering (defenses.spectral)
- ``reference_answer`` what a response adds to a reference model's own answer to its prompt (defenses.reference_answer)
- ``training_dynamics`` per-sample loss curve over a short LoRA fine-tune of a proxy model on the scored samples
                      (defenses.dynamics)

Also the ``adapter_stats`` model audit (defenses.adapter_audit; the ``logit_shift`` audit is in defenses.audit).
"""

from defenses import autorater, classifier, perplexity  # noqa: F401  (registers the built-in defenses)
from defenses import reference_answer, spectral  # noqa: F401
from defenses import adapter_audit, dynamics  # noqa: F401  (training_dynamics, the adapter_stats audit)
from defenses.base import Defense, DefenseRun, build_defense, run_defense  # noqa: F401

__all__ = ["Defense", "DefenseRun", "build_defense", "run_defense", "autorater", "classifier", "perplexity",
           "reference_answer", "spectral", "dynamics", "adapter_audit"]
