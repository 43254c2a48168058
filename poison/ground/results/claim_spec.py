"""The grammar of a claim: one comparison ``<A>_vs_<B>.<measure>.<split>``, its parts, how A and B name models of a
run, and the default family of comparisons.

- A, B: a model of the run's model table (``teacher``, ``baseline``, ``clean_control``, ``student:<name>``,
  ``gen2:student:<name>``, ``control:student:<name>``, ...), a student's bare name (``sft`` = ``student:sft``), or a
  role word: ``student`` (the first student), ``control`` (the clean control where one is trained, else the
  baseline);
- measure: ``greedy`` (the greedy answer's verdict), ``sampled`` (each prompt's biased fraction of its K sampled
  answers), ``probe`` (the seen-wording log-probability of the likelihood probe);
- split: ``target``, ``other``, ``unseen``.

Part of the ground layer: of the project it imports only the model names (``results.model_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from poison.ground.results.model_id import MAIN, ModelId, is_defended_name

MEASURES = ("greedy", "sampled", "probe")
SPLITS = ("target", "other", "unseen")
ROLE_WORDS = ("student", "control")
GRAMMAR = "<A>_vs_<B>.<measure>.<split>"


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    measure: str
    split: str

    @property
    def text(self) -> str:
        return f"{self.a}_vs_{self.b}.{self.measure}.{self.split}"


def parse_comparison(text: str) -> Comparison:
    """A comparison from its text; ValueError saying which part is wrong."""
    parts = text.rsplit(".", 2) if isinstance(text, str) else []
    if len(parts) != 3:
        raise ValueError(f"{text!r} is not {GRAMMAR} (e.g. sft_vs_teacher.greedy.target)")
    head, measure, split = parts
    if measure not in MEASURES:
        raise ValueError(f"{text!r}: measure {measure!r} is none of {', '.join(MEASURES)}")
    if split not in SPLITS:
        raise ValueError(f"{text!r}: split {split!r} is none of {', '.join(SPLITS)}")
    models = head.split("_vs_")
    if len(models) != 2 or not all(models):
        raise ValueError(f"{text!r}: name two models as <A>_vs_<B> (once '_vs_'), e.g. sft_vs_teacher")
    if models[0] == models[1]:
        raise ValueError(f"{text!r}: compares {models[0]!r} with itself")
    return Comparison(models[0], models[1], measure, split)


def resolve_model(word: str, names: Iterable[str]) -> Optional[str]:
    """The model-table name ``word`` stands for among ``names`` (in the table's order), or None."""
    names = list(names)
    if word in names:
        return word
    if word == "student":
        return next((n for n in names if _is_run_student(n)), None)
    if word == "control":
        return "clean_control" if "clean_control" in names else ("baseline" if "baseline" in names else None)
    name = str(ModelId.of_student(word))
    return name if name in names else None


def _is_run_student(name: str) -> bool:
    """Whether ``name`` is one of the run's own students (``student:<name>``: the main arm, generation 1)."""
    m = ModelId.try_parse(name)
    return m is not None and m.role == "student" and m.generation == 1 and m.arm == MAIN


def default_family(students: list[str], control: str, measure: str, split: str) -> tuple[str, list[str]]:
    """(primary, family): the primary is the first student vs the teacher (in a teacher-only run, the teacher vs
    ``control``); the family is every pair of students, each student vs the teacher (the primary among them) and the
    teacher vs ``control``, on the same measure and split."""
    tail = f".{measure}.{split}"
    primary = f"{students[0]}_vs_teacher{tail}" if students else f"teacher_vs_{control}{tail}"
    pairs = [f"{a}_vs_{b}{tail}" for i, a in enumerate(students) for b in students[i + 1:]]
    rest = pairs + [f"{s}_vs_teacher{tail}" for s in students] + [f"teacher_vs_{control}{tail}"]
    return primary, list(dict.fromkeys(rest))


def resolve_comparison(key: str, comp: Comparison, names: list[str], loose: bool = False
                       ) -> tuple[str, str, str, str]:
    """(A, B, measure, split) with A and B as model-table names; ValueError naming ``key`` when one names no model
    of ``names`` or both name the same one. With ``loose``, a model of a defended arm (``defended:``,
    ``distill-defended:``, ``per-defense:<label>:``) is taken as it is (models the config alone cannot list, checked
    when the report runs)."""
    pair = []
    for word in (comp.a, comp.b):
        found = resolve_model(word, names) or (word if loose and is_defended_name(word) else None)
        if found is None:
            raise ValueError(f"{key}: {word!r} is no model of this run; its models: {', '.join(names)} (or a "
                             f"student's name, or the role words {' and '.join(ROLE_WORDS)})")
        pair.append(found)
    if pair[0] == pair[1]:
        raise ValueError(f"{key}: {comp.a!r} and {comp.b!r} are the same model ({pair[0]})")
    return pair[0], pair[1], comp.measure, comp.split
