"""One Branch (poison.stages.branch) for every arm: what run_branch asks of the stages, in which order and under which
labels, with the stage functions replaced by recorders (nothing is trained; the tiny end-to-end runs of the test
suite train the real thing)."""

from types import SimpleNamespace

import pytest

from poison.ground.results.model_id import MAIN, Arm, ModelId, distill_label
from poison.stages import branch as B


def rec(label):
    return SimpleNamespace(name=label, key=f"key-{label}")


@pytest.fixture
def calls(monkeypatch):
    log = []

    def teacher(run, poison, defense=None, data=None, only=None):
        arm = (Arm.per_defense(only) if only else Arm.defended()) if defense else Arm()
        log.append(("teacher", str(ModelId.teacher(arm)), defense and defense.name))
        return rec(str(ModelId.teacher(arm)))

    def distill(run, teacher, data, arm=MAIN, generation=1, student=None, sampling=None, teacher_spec=None):
        label = distill_label(arm, generation, student)
        log.append(("distill_data", label, teacher.name))
        return rec(label)

    def own(run, spec, teacher, data, shared, arm=MAIN, generation=1, teacher_spec=None):
        if spec.distill_generation is None:
            return shared
        return distill(run, teacher, data, arm, generation, spec.name, spec.distill_generation, teacher_spec)

    def student(run, spec, teacher, distill, defense=None, arm=MAIN, generation=1, teacher_spec=None):
        label = str(ModelId.of_student(spec.name, generation, arm))
        log.append(("student", label, teacher.name, distill.name, defense and defense.name))
        return rec(label)

    monkeypatch.setattr(B, "stage_teacher", teacher)
    monkeypatch.setattr(B, "stage_distill_data", distill)
    monkeypatch.setattr(B, "student_distill", own)
    monkeypatch.setattr(B, "stage_student", student)
    return log


SFT = SimpleNamespace(name="sft", distill_generation=None)
OWN = SimpleNamespace(name="own", distill_generation={"max_new_tokens": 8})


def test_main_branch_with_a_cascade(calls):
    ready = []
    b = B.Branch(Arm(), B.TeacherSource.poisoned(), (SFT, OWN), generations=3, via=SFT, distill_sets_first=True)
    out = B.run_branch(None, b, rec("data"), rec("poison"), before_students=lambda: ready.append(len(calls)))
    assert [c[1] for c in calls] == ["teacher", "distill_data", "distill_data:own", "student:sft", "student:own",
                                     "gen2:distill_data", "gen2:student:sft", "gen3:distill_data",
                                     "gen3:student:sft"]
    assert ready == [2]  # after the teacher's answers, before anything a student needs
    assert out.teacher.name == "teacher" and out.distill.name == "distill_data"
    assert {n: r.name for n, r in out.distills.items()} == {"sft": "distill_data", "own": "distill_data:own"}
    assert {k: r.name for k, r in out.chains["sft"].items()} == {1: "student:sft", 2: "gen2:student:sft",
                                                                3: "gen3:student:sft"}
    assert out.students["own"].name == "student:own"
    assert calls[6][2:4] == ("student:sft", "gen2:distill_data")  # generation 2 learns from generation 1


def test_control_branch_interleaves_each_students_set(calls):
    b = B.Branch(Arm.control(), B.TeacherSource.given(rec("clean_control")), (SFT, OWN), generations=2, via=SFT)
    out = B.run_branch(None, b, rec("data"))
    assert [c[1] for c in calls] == ["control:distill_data", "control:student:sft", "control:distill_data:own",
                                     "control:student:own", "control:gen2:distill_data", "control:gen2:student:sft"]
    assert all(c[2] in ("clean_control", "control:student:sft") for c in calls)
    assert set(out.chains) == {"sft", "own"} and set(out.chains["sft"]) == {1, 2}


def test_defended_arms(calls):
    train, dist = rec("defense:train"), rec("defense:distill")
    out = B.run_branch(None, B.Branch(Arm.per_defense("clf"), B.TeacherSource.filtered(train, only="clf"), (SFT,)),
                       rec("data"), rec("poison"))
    assert calls == [("teacher", "per-defense:clf:teacher", "defense:train"),
                     ("distill_data", "per-defense:clf:distill_data", "per-defense:clf:teacher"),
                     ("student", "per-defense:clf:student:sft", "per-defense:clf:teacher",
                      "per-defense:clf:distill_data", None)]
    assert out.teacher.name == "per-defense:clf:teacher"
    calls.clear()
    B.run_branch(None, B.Branch(Arm.distill_defended(), B.TeacherSource.given(rec("teacher")), (SFT,),
                                distill=rec("distill_data"), student_defense=dist), rec("data"))
    assert calls == [("student", "distill-defended:student:sft", "teacher", "distill_data", "defense:distill")]
    calls.clear()
    filtered = B.Branch(Arm.defended(), B.TeacherSource.filtered(train), (SFT,))
    t = B.branch_teacher(None, filtered, rec("poison"))
    d = B.branch_distill(None, filtered, t, rec("data"))
    assert [c[1] for c in calls] == ["defended:teacher", "defended:distill_data"] and d.name == "defended:distill_data"
    assert t.name == "defended:teacher"


def test_teacher_sources_are_checked():
    with pytest.raises(ValueError, match="teacher source 'clean' is none of poisoned, filtered, given"):
        B.TeacherSource("clean")
    with pytest.raises(ValueError, match="given takes the teacher's record"):
        B.TeacherSource("given")
    with pytest.raises(ValueError, match="filtered the defense stage"):
        B.TeacherSource("filtered")
