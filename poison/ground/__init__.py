"""The ground layer: what every other part of the testbed stands on, importing nothing above it. Three parts, each
a subpackage, with the dependencies between them fixed by an import-linter contract (pyproject.toml):

    core      needs no model: the plugin registry (kinds, decorators, entry points, argument validation), the error
              root and its planned failures, atomic I/O and stable hashing, artifact manifests, bounded YAML,
              process groups, the machine's description, final-answer parsing
    engines   models and what runs them: model specs -> local folders (device and dtype, layer subsets, merged
              adapters), generation and scoring backends (vLLM worker, HF, OpenAI-compatible endpoints), the local
              vLLM server for judges, and RunContext (what a run hands to its stages and plugins)
    results   run directories read back: metrics.json typed (a model per section, the one writer, the reference
              page), model names (ModelId), the safe readers and ``load_run``, and the statistics (intervals,
              paired tests, detector scores, dose-response fits, replicate pooling)

engines and results stand on core and never on each other; the dashboard may import results and core only.
Plugins (data sources, bias types, distillation methods, defenses, scorers, audits, judges) import only the ground;
the orchestrator (config, stages, report, sweeps, CLI) imports everything. ``tests/test_architecture.py`` runs the
contracts.
"""
