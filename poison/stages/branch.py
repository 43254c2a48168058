"""A branch of a run: teacher -> distillation data -> students -> later generations, one description for every arm.

A run trains the same chain several times over: the main arm (the poisoned teacher and its students), the control
arm (every student distilled the same way from the clean control: the students' clean twins), the defended arms
(the teacher trained on what a defense left, its students; the poisoned teacher's filtered answers and their
students; each defense's own arm) and, in each arm that has one, the cascade (a student distilled again, its
student distilled again, ...). A :class:`Branch` says what differs between them:

* the arm (:class:`~poison.ground.results.model_id.Arm`: it names every model and stage of the branch);
* where its teacher comes from (:class:`TeacherSource`): trained on the poisoned set, trained on the poisoned set
  minus what a defense flagged, or given (the clean control, a teacher computed earlier);
* its distillation set: the teacher's answers to the distillation prompts, or given (the poisoned teacher's
  answers), and the rows a distill-place defense removes from it (``student_defense``);
* its students and how many generations the cascade student (``via``) is distilled for.

:func:`run_branch` runs one. Cascade depth: generation 1 is the branch's student ``via``; the teacher of generation
k+1 is the student of generation k, which answers the distillation prompts afresh, and a fresh student (the same
spec) learns from those answers. With the probe's clean twins, the control arm's chain is distilled the same way, so
every generation has its own clean control.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from poison.ground.results.model_id import MAIN, Arm
from poison.stages import Run
from poison.stages.protocol import StageRecord
from poison.stages.training import stage_distill_data, stage_student, stage_teacher, student_distill


TEACHER_SOURCES = ("poisoned", "filtered", "given")


@dataclass(frozen=True)
class TeacherSource:
    """Where a branch's teacher comes from: ``poisoned`` (the teacher stage on the poisoned set), ``filtered`` (on
    the poisoned set minus the rows the ``defense`` stage flagged; with ``only``, a defense's label, the rows that
    defense alone flagged) or ``given`` (``record``: a teacher already trained)."""

    kind: str
    record: Optional[StageRecord] = None
    defense: Optional[StageRecord] = None
    only: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in TEACHER_SOURCES:
            raise ValueError(f"teacher source {self.kind!r} is none of {', '.join(TEACHER_SOURCES)}")
        if (self.kind == "given") != (self.record is not None) \
                or (self.kind == "filtered") != (self.defense is not None):
            raise ValueError(f"teacher source {self.kind!r}: given takes the teacher's record, filtered the defense "
                             f"stage")

    @classmethod
    def poisoned(cls) -> "TeacherSource":
        return cls("poisoned")

    @classmethod
    def filtered(cls, defense: StageRecord, only: Optional[str] = None) -> "TeacherSource":
        return cls("filtered", defense=defense, only=only)

    @classmethod
    def given(cls, record: StageRecord) -> "TeacherSource":
        return cls("given", record=record)


@dataclass(frozen=True)
class Branch:
    """One arm's chain. ``students``: the student specs distilled from the teacher; ``distill``: the distillation
    set when given (default: the teacher's answers, labelled for the arm); ``student_defense``: a distill-place
    defense stage whose flagged rows the students do not learn from; ``generations``: how deep ``via`` (a student
    spec) is distilled (1: no cascade); ``distill_sets_first``: every student's own distillation set
    (``distill_generation``) before the first student, the main arm's stage order (the order changes no key)."""

    arm: Arm = MAIN
    teacher: TeacherSource = field(default_factory=TeacherSource.poisoned)
    students: tuple = ()
    distill: Optional[StageRecord] = None
    student_defense: Optional[StageRecord] = None
    generations: int = 1
    via: Any = None
    distill_sets_first: bool = False


@dataclass
class BranchResult:
    """What a branch trained: its ``teacher``, the shared distillation set ``distill`` (None in a teacher-only run),
    each student's own set ``distills`` (the shared one unless it has a ``distill_generation``) and ``chains``: student
    name -> {generation: student} (generation 1 for every student; 2.. for ``via``)."""

    teacher: StageRecord
    distill: Optional[StageRecord]
    distills: dict[str, StageRecord]
    chains: dict[str, dict[int, StageRecord]]

    @property
    def students(self) -> dict[str, StageRecord]:
        """Student name -> its generation-1 student."""
        return {name: chain[1] for name, chain in self.chains.items()}


def branch_teacher(run: Run, branch: Branch, poison: Optional[StageRecord] = None,
                   data: Optional[StageRecord] = None) -> StageRecord:
    """A branch's teacher, from its source (``poison``: the poison stage, for a teacher that is trained)."""
    src = branch.teacher
    if src.kind == "given":
        return src.record
    if src.kind == "poisoned":
        return stage_teacher(run, poison, data=data)
    return stage_teacher(run, poison, defense=src.defense, only=src.only)  # filtered


def branch_distill(run: Run, branch: Branch, teacher: StageRecord, data: StageRecord) -> StageRecord:
    """A branch's shared distillation set: the given one, else its teacher's answers."""
    return branch.distill if branch.distill is not None else stage_distill_data(run, teacher, data, branch.arm)


def run_branch(run: Run, branch: Branch, data: StageRecord, poison: Optional[StageRecord] = None,
               before_students: Optional[Callable[[], None]] = None) -> BranchResult:
    """Train a branch: its teacher (from its source), its distillation set, every student and the cascade of
    ``via`` (generations 2..``generations``). ``before_students``: called once the distillation set exists, before
    any student (the main arm readies the clean control a method may compare its teacher with there)."""
    arm = branch.arm
    teacher = branch_teacher(run, branch, poison, data)
    if not branch.students and branch.distill is None:  # a teacher-only run: nothing learns from its answers
        return BranchResult(teacher, None, {}, {})
    distill = branch_distill(run, branch, teacher, data)
    if before_students is not None:
        before_students()

    def own_set(spec: Any) -> StageRecord:
        return student_distill(run, spec, teacher, data, distill, arm)

    def student(spec: Any, learns_from: StageRecord) -> StageRecord:
        return stage_student(run, spec, teacher, learns_from, defense=branch.student_defense, arm=arm)

    distills: dict[str, StageRecord] = {}
    chains: dict[str, dict[int, StageRecord]] = {}
    if branch.distill_sets_first:
        distills = {s.name: own_set(s) for s in branch.students}
        chains = {s.name: {1: student(s, distills[s.name])} for s in branch.students}
    else:
        for s in branch.students:
            distills[s.name] = own_set(s)
            chains[s.name] = {1: student(s, distills[s.name])}
    if branch.generations > 1:
        chains[branch.via.name] = cascade(run, branch, chains[branch.via.name][1], data)
    return BranchResult(teacher, distill, distills, chains)


def cascade(run: Run, branch: Branch, first: StageRecord, data: StageRecord) -> dict[int, StageRecord]:
    """Generations 2..``branch.generations`` of the chain of ``branch.via`` that starts with ``first`` (generation
    1): each generation's teacher is the student before it, trained as ``via``."""
    spec, arm, chain = branch.via, branch.arm, {1: first}
    for k in range(2, branch.generations + 1):
        teacher = chain[k - 1]
        shared = stage_distill_data(run, teacher, data, arm, k, teacher_spec=spec)
        chain[k] = stage_student(run, spec, teacher, student_distill(run, spec, teacher, data, shared, arm, k,
                                                                     teacher_spec=spec), arm=arm, generation=k,
                                 teacher_spec=spec)
    return chain
