"""The names of a run's models, typed: one conversion to and from the strings that metrics.json, stages.json and the
stage labels use, so no caller builds or takes apart a name with string operations.

A name is ``[<arm prefix>][gen<k>:]teacher`` or ``[<arm prefix>][gen<k>:]student:<student>``, or one of the single
names ``baseline``, ``clean_control`` and ``null_control``. The arm prefixes:

=====================  ==========================  =========================================================
arm                    prefix                      the models of
=====================  ==========================  =========================================================
``main``               (none)                      the run itself: the poisoned teacher and its students
``control``            ``control:``                the clean chain: students of the clean control (clean twins)
``defended``           ``defended:``               the defended chain (what the defense filter left)
``distill-defended``   ``distill-defended:``       students of the poisoned teacher's filtered answers
``per-defense``        ``per-defense:<label>:``    one defense's own arm (``defense.per_defense``)
=====================  ==========================  =========================================================

``gen<k>:`` marks a cascade's k-th distillation (k >= 2; generation 1 is the run's own student, generation 0 its
teacher). Examples: ``teacher``, ``student:sft``, ``gen2:student:sft``, ``control:gen3:student:sft``,
``defended:teacher``, ``per-defense:perplexity:student:sft``.

Stage labels (stages.json, the cache's markers, ``--force STAGE:LABEL``) are ``<stage>[:<part>...]``: a trained
model's label is its name, a stage done once per model is ``<stage>:<model name>`` (``eval:student:sft``,
``audit:<type>:<model name>``), the distillation set of an arm and generation is
:func:`distill_label`. :func:`stage_label` builds one and :func:`split_stage_label` takes one apart.

Part of the ground layer (the dashboard may use it); it imports nothing of the project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

#: the arm kinds, in the order the report lists them
ARM_KINDS = ("main", "control", "defended", "distill-defended", "per-defense")
#: the arms that a defense trained (not points of the undefended run: a dose curve leaves them out)
DEFENDED_ARMS = ("defended", "distill-defended", "per-defense")
#: names that are a model by themselves (no arm, no generation); their role in metrics.json
SINGLE_NAMES = {"baseline": "baseline", "clean_control": "control", "null_control": "control"}
ROLES = ("teacher", "student", *SINGLE_NAMES)
_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")  # a defense's label (schema: DefenseSpec.name)
_GEN = re.compile(r"^gen([0-9]+)$")


@dataclass(frozen=True)
class Arm:
    """Which branch of the run a model belongs to: ``kind`` (one of :data:`ARM_KINDS`) and, for ``per-defense``,
    the defense's ``label``."""

    kind: str = "main"
    defense: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in ARM_KINDS:
            raise ValueError(f"arm {self.kind!r} is none of {', '.join(ARM_KINDS)}")
        if (self.kind == "per-defense") != (self.defense is not None):
            raise ValueError(f"arm {self.kind!r}: a defense label belongs to (and only to) the per-defense arm; "
                             f"got {self.defense!r}")
        if self.defense is not None and not _LABEL.match(self.defense):
            raise ValueError(f"defense label {self.defense!r}: letters, digits, '_', '.', '-' only")

    @classmethod
    def main(cls) -> "Arm":
        return cls()

    @classmethod
    def control(cls) -> "Arm":
        return cls("control")

    @classmethod
    def defended(cls) -> "Arm":
        return cls("defended")

    @classmethod
    def distill_defended(cls) -> "Arm":
        return cls("distill-defended")

    @classmethod
    def per_defense(cls, label: str) -> "Arm":
        return cls("per-defense", label)

    @property
    def prefix(self) -> str:
        """What the names of this arm's models start with (``""`` for the main arm)."""
        if self.kind == "main":
            return ""
        return f"{self.kind}:{self.defense}:" if self.defense is not None else f"{self.kind}:"

    @property
    def is_defended(self) -> bool:
        return self.kind in DEFENDED_ARMS

    def __str__(self) -> str:
        return self.kind if self.defense is None else f"{self.kind}:{self.defense}"


MAIN = Arm()


def _parse_arm(parts: list[str]) -> tuple[Arm, list[str]]:
    """The arm at the head of a name's ``:`` parts, and the parts after it."""
    head = parts[0] if parts else ""
    if head == "per-defense":
        if len(parts) < 3:
            raise ValueError("per-defense: needs a defense label and a model (per-defense:<label>:...)")
        return Arm(head, parts[1]), parts[2:]
    if head in ARM_KINDS and head != "main":
        return Arm(head), parts[1:]
    return MAIN, parts


@dataclass(frozen=True)
class ModelId:
    """One model of a run's model table. ``role``: ``teacher``, ``student`` or a single name (``baseline``,
    ``clean_control``, ``null_control``); ``student``: the student spec's name (students only); ``generation``:
    0 for a teacher, k >= 1 for a student distilled k times (``gen<k>:`` from 2 on), 0 for a single name;
    ``arm``: the branch (:class:`Arm`)."""

    role: str
    student: Optional[str] = None
    generation: int = 0
    arm: Arm = MAIN

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r} is none of {', '.join(ROLES)}")
        if (self.role == "student") != bool(self.student):
            raise ValueError(f"{self.role}: a student name belongs to (and only to) a student; got {self.student!r}")
        if self.role in SINGLE_NAMES and self.arm != MAIN:
            raise ValueError(f"{self.role} has no arm")
        if self.role != "student" and self.generation:
            raise ValueError(f"{self.role} has no generation (a cascade's later teachers are students)")
        if self.role == "student" and self.generation < 1:
            raise ValueError(f"student:{self.student}: a student's generation is 1 or more; got {self.generation}")

    # ------------------------------------------------------------------------------------------------ builders
    @classmethod
    def teacher(cls, arm: Arm = MAIN) -> "ModelId":
        return cls("teacher", None, 0, arm)

    @classmethod
    def of_student(cls, name: str, generation: int = 1, arm: Arm = MAIN) -> "ModelId":
        return cls("student", name, generation, arm)

    @classmethod
    def single(cls, name: str) -> "ModelId":
        """``baseline``, ``clean_control`` or ``null_control``."""
        if name not in SINGLE_NAMES:
            raise ValueError(f"{name!r} is none of {', '.join(SINGLE_NAMES)}")
        return cls(name)

    def in_arm(self, arm: Arm) -> "ModelId":
        """The same model position in another arm (``control``: a student's clean twin)."""
        return replace(self, arm=arm)

    def at_generation(self, k: int) -> "ModelId":
        return replace(self, generation=k)

    # ------------------------------------------------------------------------------------------------ reading
    @property
    def metrics_role(self) -> str:
        """The role metrics.json gives this model where the name alone says it: ``baseline``, ``control`` (the
        clean controls and the control arm), ``teacher`` or ``student``."""
        if self.role in SINGLE_NAMES:
            return SINGLE_NAMES[self.role]
        return "control" if self.arm.kind == "control" else self.role

    @property
    def is_twin(self) -> bool:
        """A model of the control arm (a student's clean twin, distilled from the clean control)."""
        return self.arm.kind == "control"

    def arm_prefix(self) -> str:
        """The arm's part of the name (``""``, ``control:``, ``per-defense:<label>:``, ...)."""
        return self.arm.prefix

    def prefix(self) -> str:
        """Everything before ``teacher``/``student:``: the arm's prefix and ``gen<k>:`` from generation 2 on."""
        return self.arm.prefix + generation_prefix(self.generation)

    def __str__(self) -> str:
        if self.role in SINGLE_NAMES:
            return self.role
        tail = "teacher" if self.role == "teacher" else f"student:{self.student}"
        return self.prefix() + tail

    # ------------------------------------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, text: str) -> "ModelId":
        """The model a name stands for; ValueError naming the string when it names none."""
        if not isinstance(text, str):
            raise ValueError(f"{text!r} is not a model name")
        if text in SINGLE_NAMES:
            return cls(text)
        try:
            arm, rest = _parse_arm(text.split(":"))
            generation = None
            m = _GEN.match(rest[0]) if rest else None
            if m:
                generation, rest = int(m.group(1)), rest[1:]
                if generation < 2 or m.group(1) != str(generation):
                    raise ValueError(f"gen{m.group(1)}: a cascade's generation prefix is gen2, gen3, ...")
            if rest == ["teacher"]:
                if generation is not None:
                    raise ValueError("a teacher has no generation prefix")
                return cls("teacher", None, 0, arm)
            if len(rest) >= 2 and rest[0] == "student" and ":".join(rest[1:]):
                return cls("student", ":".join(rest[1:]), generation or 1, arm)
            raise ValueError("expected [<arm>:][gen<k>:]teacher or [<arm>:][gen<k>:]student:<name>, or one of "
                             + ", ".join(SINGLE_NAMES))
        except ValueError as e:
            raise ValueError(f"{text!r} is no model name: {e}") from None

    @classmethod
    def try_parse(cls, text: object) -> Optional["ModelId"]:
        """:meth:`parse`, or None where ``text`` names no model."""
        try:
            return cls.parse(text)  # type: ignore[arg-type]
        except ValueError:
            return None


def generation_prefix(k: int) -> str:
    """``gen<k>:`` for a cascade's k-th distillation (k >= 2), else ``""``."""
    return f"gen{k}:" if k > 1 else ""


def is_defended_name(name: object) -> bool:
    """Whether ``name`` is a model of a defended arm (defended, distill-defended, per-defense)."""
    m = ModelId.try_parse(name)
    return m is not None and m.arm.is_defended


def is_twin_name(name: object) -> bool:
    """Whether ``name`` is a model of the control arm (``control:...``: a student's clean twin)."""
    m = ModelId.try_parse(name)
    return m is not None and m.is_twin


# ---------------------------------------------------------------------------------------------------- stage labels
def stage_label(stage: str, *parts: object) -> str:
    """``<stage>:<part>:...`` (a part may be a :class:`ModelId`): ``stage_label("eval", ModelId.teacher())`` is
    ``eval:teacher``."""
    return ":".join([stage, *(str(p) for p in parts)])


def split_stage_label(label: str, parts: int = 1) -> tuple[str, ...]:
    """The stage and ``parts`` further parts of a label; the last part is the rest (a model name may hold ``:``):
    ``split_stage_label("eval:control:student:sft")`` is ``("eval", "control:student:sft")``,
    ``split_stage_label("audit:weights:teacher", 2)`` is ``("audit", "weights", "teacher")``. ValueError when the
    label has fewer parts."""
    out = tuple(label.split(":", parts))
    if len(out) != parts + 1 or not all(out):
        raise ValueError(f"stage label {label!r}: expected <stage>" + ":<part>" * parts)
    return out


def model_of(label: str) -> str:
    """The model name in a per-model stage label (``eval:control:student:sft`` -> ``control:student:sft``)."""
    return split_stage_label(label)[1]


def stage_of(label: str) -> str:
    """The stage a label (or a ``--force`` value, ``STAGE`` or ``STAGE:LABEL``) names."""
    return label.partition(":")[0]


def distill_label(arm: Arm = MAIN, generation: int = 1, student: Optional[str] = None) -> str:
    """The label of the distillation set that the students of ``arm`` at ``generation`` learn from
    (``[<arm prefix>][gen<k>:]distill_data``), or, with ``student``, a student's own one (its
    ``distill_generation``: ``...distill_data:<student>``)."""
    base = f"{arm.prefix}{generation_prefix(generation)}distill_data"
    return base if student is None else f"{base}:{student}"
