"""The stage protocol: every stage of a run goes through one small cache object, ``StageCache``.

A stage is a pure function of its inputs (its slice of the config, the keys of its upstream stages, the stage
version). Each stage is declared beside its code as a :class:`StageSpec` (``stage(name, version, inputs, ...)``):
``run`` and ``run_many`` take that spec, check the inputs it says every key holds, and key the artifact by its name
and version. Its artifact folder is ``<cache_dir>/stages/<stage>/<key>``, key = hash of those inputs. The protocol:

- a folder with a ``_stage.json`` marker is a hit, unless ``--force STAGE`` or ``--force STAGE:LABEL`` names it
  (``--force eval`` recomputes every model's eval, ``--force eval:teacher`` only the teacher's);
- otherwise the stage computes into a temporary sibling folder that is renamed into place once complete (a killed
  stage leaves nothing half-written; a forced recompute swaps the old folder out only then);
- every marker has the same fields: stage, label, key, inputs, seconds, created, code_version, info, files (each
  file's size and blake2b hash, computed when the stage writes it);
- a hit is checked first (``runtime.verify_cache``: ``size``, every file's size and that it loads; ``full``, its
  hash too): a damaged artifact is set aside (``.corrupt-*``), with one warning, and recomputed; a checking cache
  (``--check``) raises an error naming the stage and ``--force STAGE`` instead; an old marker without ``files`` is a
  hit checked as far as it can be (every file loads);
- every stage, cached or not, is recorded in the run directory's ``stages.json`` under its label, and the run in
  the artifact's use list (``.uses-<key>.jsonl``: ``cascade-poison cache ls`` and ``gc`` read it).

``run`` handles one artifact; ``run_many`` a batch of artifacts of one stage computed together (the eval stage
generates for every model in one vLLM worker, the judge rates every model's answers with one server).

Two runs on one cache (two terminals, or sweep points on several machines sharing storage): each artifact is computed
under a lock of its key (``filelock``), so the second run waits and then reads the first one's artifact.

Several processes (``accelerate launch``): training stages run in every process (data parallel) and the main one
saves; every other stage is computed by the main process while the others wait for its marker.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from filelock import FileLock

from poison import __version__
from poison.ground.core.artifacts import CacheMiss, check_folder, describe, manifest, move_aside, read_json, record_use
from poison.ground.core.errors import PoisonError, StageError
from poison.ground.core.io import atomic_dir, atomic_write_json, stable_hash
from poison.ground.core.procs import release_memory, wait_for

log = logging.getLogger("poison")


@dataclass(frozen=True)
class StageSpec:
    """A stage as its module declares it, beside its code (``DATA = stage("data", version=2, inputs=(...))``).

    ``version`` joins every key of the stage: bump it when the code changes what the stage produces, and its cached
    artifacts are recomputed (say why in ``changes``, one line per bump). ``inputs`` are the names its key's inputs
    must hold (the stage may add more, e.g. the plugin records); a call without one of them is a bug, raised before
    anything is computed. ``training``: every process of a multi-process launch runs it (data-parallel)."""

    name: str
    version: int
    inputs: tuple[str, ...] = ()
    training: bool = False
    doc: str = ""
    changes: tuple[str, ...] = ()

    def check_inputs(self, inputs: dict[str, Any], label: str) -> None:
        missing = [k for k in self.inputs if k not in inputs]
        if missing:
            raise StageError(f"stage {self.name} ({label}): its key's inputs lack {', '.join(missing)} (declared in "
                             f"the stage's StageSpec)")


#: every stage the stage modules declare, by name (``poison.stages.all_stages()`` imports them all first)
STAGES: dict[str, StageSpec] = {}


def stage(name: str, version: int, inputs: tuple[str, ...] = (), *, training: bool = False, doc: str = "",
          changes: tuple[str, ...] = ()) -> StageSpec:
    """Declare a stage (once, at the top of the module that computes it) and return its spec."""
    spec = StageSpec(name, version, tuple(inputs), training, doc, tuple(changes))
    if STAGES.get(name, spec) != spec:
        raise StageError(f"stage {name} is declared twice, differently")
    STAGES[name] = spec
    return spec


@dataclass
class StageRecord:
    name: str  # the label: "teacher", "student:sft", "eval:baseline", "defense:train", ...
    key: str
    path: str
    cached: bool
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


class StageCache:
    """Content-addressed stage artifacts under ``root`` (``<cache_dir>/stages``), with the run's ``--force`` set.
    ``verify`` is ``runtime.verify_cache``; ``checking`` (``--check``) computes nothing: a cached artifact is checked
    (an error if damaged) and the first one that is not cached raises :class:`CacheMiss`."""

    def __init__(self, root: Path, run_dir: Optional[Path], force: Optional[set[str]] = None, main: bool = True,
                 verify: str = "size", checking: bool = False):
        self.root = Path(root)
        self.run_dir = Path(run_dir) if run_dir else None
        self.force = set(force or ())
        self.main = main
        self.verify = verify
        self.checking = checking
        self.records: dict[str, StageRecord] = {}
        self._started = time.time()

    # ------------------------------------------------------------------------------------------------ keys
    @staticmethod
    def key(stage: StageSpec, inputs: dict[str, Any]) -> str:
        return stable_hash({"stage": stage.name, "version": stage.version, "inputs": inputs})

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def forced(self, stage: str, label: str) -> bool:
        return stage in self.force or label in self.force

    def lock(self, stage: str, key: str) -> FileLock:
        """The lock of one artifact (a file beside its folder; dot-prefixed so that no scan mistakes it)."""
        (self.root / stage).mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / stage / f".lock-{key}"))

    # ------------------------------------------------------------------------------------------------ one artifact
    def run(self, spec: StageSpec, inputs: dict[str, Any], fn: Callable[[Path], Optional[dict[str, Any]]],
            label: Optional[str] = None) -> StageRecord:
        """The artifact of ``spec``'s stage for ``inputs``: from the cache, or computed by ``fn(tmp_folder) ->
        info``."""
        stage = spec.name
        label = label or stage
        spec.check_inputs(inputs, label)
        key = self.key(spec, inputs)
        final = self.folder(stage, key)
        marker = final / "_stage.json"
        if not self.main and not (spec.training and not marker.exists()):
            wait_for(marker, label)  # the main process computes it
            return self._add(self._hit(label, key, final))
        if self.checking:
            return self._add(self._checked(stage, label, key, final))
        if marker.exists() and not self.forced(stage, label) and not self._problems(final):
            log.info("[%s] cached (%s)", label, key)
            return self._add(self._hit(label, key, final))
        if not self.main:  # a training stage in a helper process: train along, discard what it would write
            with tempfile.TemporaryDirectory(prefix=f"rank-{stage}-") as tmp:
                fn(Path(tmp))
            release_memory()
            wait_for(marker, label)
            return self._add(StageRecord(label, key, str(final), False, 0.0, self._marker(final).get("info", {})))
        with self.lock(stage, key):
            if self._done_while_waiting(stage, label, marker):
                problems = self._problems(final)
                if not problems:
                    log.info("[%s] cached (%s): computed by another run meanwhile", label, key)
                    return self._add(self._hit(label, key, final))
                self._set_aside(stage, label, key, final, problems)
            log.info("[%s] running ...", label)
            t0 = time.time()
            with atomic_dir(final, replace=True) as tmp:
                info = fn(tmp) or {}
                secs = round(time.time() - t0, 2)
                self._write_marker(tmp, stage, label, key, inputs, secs, info)
            release_memory()  # what the stage freed goes back to the system before the next stage starts an engine
            log.info("[%s] done in %.1fs", label, secs)
        return self._add(StageRecord(label, key, str(final), False, secs, info))

    # ------------------------------------------------------------------------------------------------ a batch
    def run_many(self, spec: StageSpec, entries: dict[str, dict[str, Any]],
                 compute: Callable[[dict[str, Path]], dict[str, tuple[dict[str, Any], float]]],
                 ) -> dict[str, StageRecord]:
        """Artifacts of one stage for several labels (``{label: inputs}``). The labels that are not cached are
        computed together by one call ``compute({label: tmp_folder}) -> {label: (info, seconds)}``; each is then
        committed like a single artifact. Main process only."""
        stage = spec.name
        out: dict[str, StageRecord] = {}
        pending: dict[str, tuple[str, Path]] = {}
        for label, inputs in entries.items():
            spec.check_inputs(inputs, label)
            key = self.key(spec, inputs)
            final = self.folder(stage, key)
            if self.checking:
                out[label] = self._checked(stage, label, key, final)
            elif (final / "_stage.json").exists() and not self.forced(stage, label) and not self._problems(final):
                log.info("[%s] cached (%s)", label, key)
                out[label] = self._hit(label, key, final)
            else:
                pending[label] = (key, final)
        if pending:
            with ExitStack() as locks:
                for key in sorted({k for k, _ in pending.values()}):  # one order for every run: no deadlock
                    locks.enter_context(self.lock(stage, key))
                for label, (key, final) in list(pending.items()):  # another run may have finished them meanwhile
                    if self._done_while_waiting(stage, label, final / "_stage.json"):
                        problems = self._problems(final)
                        if not problems:
                            out[label] = self._hit(label, key, final)
                            del pending[label]
                        else:
                            self._set_aside(stage, label, key, final, problems)
                if pending:
                    first: dict[str, str] = {}  # labels with one key (one model under two names) share its artifact
                    for label, (key, _) in pending.items():
                        first.setdefault(key, label)
                    todo = {label: pending[label] for label in first.values()}
                    log.info("[%s] running for %s ...", stage, ", ".join(todo))
                    with ExitStack() as stack:
                        tmps = {label: stack.enter_context(atomic_dir(final, replace=True))
                                for label, (_, final) in todo.items()}
                        results = compute(tmps)
                        release_memory()
                        for label, (key, final) in todo.items():
                            info, secs = results[label]
                            self._write_marker(tmps[label], stage, label, key, entries[label], round(secs, 2), info)
                            out[label] = StageRecord(label, key, str(final), False, round(secs, 2), info)
                    for label, (key, final) in pending.items():
                        if label not in todo:
                            log.info("[%s] same artifact as %s (%s)", label, first[key], key)
                            out[label] = self._hit(label, key, final)
        for label in entries:  # stages.json in the order the stage was asked for
            self._add(out[label])
        return {label: out[label] for label in entries}

    # ------------------------------------------------------------------------------------------------ helpers
    def _done_while_waiting(self, stage: str, label: str, marker: Path) -> bool:
        """An artifact that appeared while this run waited for its lock counts as a hit, also when forced: a forced
        artifact another run created after this run started is the recomputation ``--force`` asked for."""
        if not marker.exists():
            return False
        if not self.forced(stage, label):
            return True
        return marker.stat().st_mtime >= self._started

    @staticmethod
    def _marker(final: Path) -> dict[str, Any]:
        return json.loads((final / "_stage.json").read_text())

    def _problems(self, final: Path) -> list[tuple[str, str]]:
        """What is wrong with a cached artifact (``[]``: nothing): its marker, each file's size (and hash, with
        ``verify_cache: full``) against the marker, and that each file loads."""
        try:
            marker = read_json(final / "_stage.json")
        except PoisonError as e:
            return [("_stage.json", str(e).split(": ", 1)[-1].split(";")[0])]
        files = marker.get("files") if isinstance(marker, dict) else None
        if not isinstance(marker, dict) or not isinstance(marker.get("info", {}), dict):
            return [("_stage.json", "not a stage marker")]
        return check_folder(final, files if isinstance(files, dict) else None, full=self.verify == "full")

    def _set_aside(self, stage: str, label: str, key: str, final: Path, problems: list[tuple[str, str]]) -> None:
        """Move a damaged artifact out of the way (kept as ``.corrupt-*``), with one warning line; it is recomputed."""
        aside = move_aside(final)
        log.warning("[%s] damaged cache artifact of stage %s, key %s: %s; set aside as %s, recomputing", label, stage,
                    key, describe(problems), aside)

    def _checked(self, stage: str, label: str, key: str, final: Path) -> StageRecord:
        """``--check``: the record of an intact cached artifact; an error naming the stage for a damaged one;
        :class:`CacheMiss` for one that a run would compute."""
        if self.forced(stage, label) or not (final / "_stage.json").exists():
            raise CacheMiss(label)
        problems = self._problems(final)
        if problems:
            raise StageError(f"stage {stage} ({label}): its cached artifact {final} is damaged: {describe(problems)}; "
                             f"a run sets it aside and recomputes it (or run with --force {stage})")
        return self._hit(label, key, final)

    def _hit(self, label: str, key: str, final: Path) -> StageRecord:
        return StageRecord(label, key, str(final), True, 0.0, self._marker(final).get("info", {}))

    @staticmethod
    def _write_marker(tmp: Path, stage: str, label: str, key: str, inputs: dict[str, Any], seconds: float,
                      info: dict[str, Any]) -> None:
        (tmp / "_stage.json").write_text(json.dumps(
            {"stage": stage, "label": label, "key": key, "inputs": inputs, "seconds": seconds,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "code_version": __version__, "info": info,
             "files": manifest(tmp)},
            indent=2, default=str))

    def _add(self, rec: StageRecord) -> StageRecord:
        self.records[rec.name] = rec
        if self.main and self.run_dir is not None:
            atomic_write_json(self.run_dir / "stages.json", {k: vars(v) for k, v in self.records.items()})
            record_use(Path(rec.path), self.run_dir, rec.name)
        return rec
