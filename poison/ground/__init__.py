"""The ground layer: what every other part of the testbed stands on, importing nothing above it.

    registry    plugin kinds, decorators, entry-point discovery, argument validation
    errors      the one error root (``PoisonError``) and its planned failures
    io          atomic writes, stable hashing of config slices, leftovers of killed processes
    artifacts   manifests (size + hash) of artifact folders, load probes, guarded reads, damaged folders set aside
    models      model specs -> local HF folders (built-in GGUF, hub id, folder); device and dtype choice
    procs       process groups: several training processes (accelerate launch) and waiting on the main one
    stats       intervals, ratios, agreement and detector statistics (one copy, used everywhere)
    answers     final answers of worked solutions (numbers, option letters)
    generate    generation backends: the vLLM worker, HF generate, OpenAI-compatible endpoints
    server      a local OpenAI-compatible vLLM server (judge models)
    context     RunContext: what a run hands to its stages and plugins (dirs, device, dtype, generate/score)
    rundir      reading a run directory back safely (the dashboard uses it)
    analysis    ``poison.load_run``: a run directory as pandas frames, for analysis with code
    results     metrics.json typed: a model per section, the section registry, the one writer, the reference page
    yamlio      bounded YAML for user-written configs
    dose        dose-response fits (binomial GLM on log-dose, ED50)

Plugins (data sources, bias types, distillation methods, defenses, scorers) import only this layer; the
orchestrator (config, stages, report, sweeps, CLI) imports everything. ``tests/test_architecture.py`` runs the
import-linter contract in pyproject.toml that says so.
"""
