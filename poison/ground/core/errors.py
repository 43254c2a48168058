"""The one error root. Every planned failure (bad config, bad model, bad data, a generation backend or a defense
that fails, an endpoint that does not answer) is a ``PoisonError``; the CLI catches that one class and prints
``error: <message>`` with exit code 2. Anything else is a bug and keeps its traceback.

Subclasses that correspond to wrong input also derive from ``ValueError``, so callers that treat them as such
(pydantic validators, older code) keep working.
"""

from __future__ import annotations


class PoisonError(Exception):
    """A planned failure; the message says what is wrong and names the field, file or endpoint."""


class ConfigError(PoisonError, ValueError):
    """A config file or override is invalid. The message names the file and each offending key path."""


class PluginError(PoisonError, ValueError):
    """A plugin name or its arguments are wrong. ``path`` is the config key path, when known."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ModelError(PoisonError, ValueError):
    """A model spec cannot be resolved. The message names the config field and the spec."""


class DataError(PoisonError, ValueError):
    """A data file or dataset cannot be read, or yields too few usable rows; the message names it."""


class GenerationError(PoisonError, RuntimeError):
    """A generation backend (vLLM worker, HF generate, an OpenAI-compatible endpoint) failed."""


class ServerError(GenerationError):
    """A local model server did not come up; the message has the tail of its log."""


class DefenseError(PoisonError, RuntimeError):
    """A defense failed or returned unusable scores; the message names the defense."""


class TrainingError(PoisonError, RuntimeError):
    """A training or distillation stage cannot run (no rows to train on, an incompatible teacher/student pair)."""


class StageError(PoisonError, RuntimeError):
    """A stage of the run cannot produce its artifact (for example splits that overlap)."""


class StorageError(PoisonError, RuntimeError):
    """A write failed for lack of space (ENOSPC, a quota, or EFBIG under a file-size limit); nothing partial is
    left, and the message names the folder and the space the write needed at least."""


class ArtifactError(PoisonError, RuntimeError):
    """A stage artifact or a run-directory file is damaged or cannot be read; the message names the file and what to
    do (for a cached artifact: ``--force STAGE``)."""
