"""The typed model names (poison.ground.results.model_id): every name form the run writes round-trips through
ModelId, malformed names raise naming the string, stage labels are built and taken apart in one place, and the model
table and the config's model list use them."""

import pytest

from poison.ground.results.model_id import (Arm, ModelId, distill_label, is_defended_name, is_twin_name, model_of,
                                            split_stage_label, stage_label, stage_of)

NAMES = {  # name -> (role, student, generation, arm, metrics role)
    "baseline": ("baseline", None, 0, Arm(), "baseline"),
    "clean_control": ("clean_control", None, 0, Arm(), "control"),
    "null_control": ("null_control", None, 0, Arm(), "control"),
    "teacher": ("teacher", None, 0, Arm(), "teacher"),
    "student:sft": ("student", "sft", 1, Arm(), "student"),
    "gen2:student:sft": ("student", "sft", 2, Arm(), "student"),
    "gen12:student:kd_masked": ("student", "kd_masked", 12, Arm(), "student"),
    "control:student:sft": ("student", "sft", 1, Arm.control(), "control"),
    "control:gen3:student:sft": ("student", "sft", 3, Arm.control(), "control"),
    "control:teacher": ("teacher", None, 0, Arm.control(), "control"),
    "defended:teacher": ("teacher", None, 0, Arm.defended(), "teacher"),
    "defended:student:sft": ("student", "sft", 1, Arm.defended(), "student"),
    "defended:gen2:student:sft": ("student", "sft", 2, Arm.defended(), "student"),
    "distill-defended:student:sft": ("student", "sft", 1, Arm.distill_defended(), "student"),
    "per-defense:perplexity:teacher": ("teacher", None, 0, Arm.per_defense("perplexity"), "teacher"),
    "per-defense:loose.v2-a:student:sft": ("student", "sft", 1, Arm.per_defense("loose.v2-a"), "student"),
    "student:a:b": ("student", "a:b", 1, Arm(), "student"),  # a student's name may hold ':' (the rest is its name)
    "student:teacher": ("student", "teacher", 1, Arm(), "student"),
    "student:gen2": ("student", "gen2", 1, Arm(), "student"),
}


@pytest.mark.parametrize("name", list(NAMES))
def test_every_name_round_trips(name):
    m = ModelId.parse(name)
    role, student, generation, arm, metrics_role = NAMES[name]
    assert (m.role, m.student, m.generation, m.arm, m.metrics_role) == (role, student, generation, arm, metrics_role)
    assert str(m) == name
    assert ModelId.parse(str(m)) == m and ModelId.try_parse(name) == m
    assert m == ModelId(role, student, generation, arm)  # frozen, compared by value


def test_builders_write_the_names_the_run_writes():
    assert str(ModelId.teacher()) == "teacher"
    assert str(ModelId.of_student("sft")) == "student:sft"
    assert str(ModelId.of_student("sft", 3)) == "gen3:student:sft"
    assert str(ModelId.of_student("sft", 2, Arm.control())) == "control:gen2:student:sft"
    assert str(ModelId.of_student("sft").in_arm(Arm.control())) == "control:student:sft"
    assert str(ModelId.teacher(Arm.per_defense("clf"))) == "per-defense:clf:teacher"
    assert str(ModelId.of_student("sft", arm=Arm.distill_defended())) == "distill-defended:student:sft"
    assert str(ModelId.of_student("sft").at_generation(4)) == "gen4:student:sft"
    assert str(ModelId.single("clean_control")) == "clean_control"
    assert ModelId.of_student("sft", 2, Arm.control()).prefix() == "control:gen2:"
    assert ModelId.of_student("sft", 2, Arm.control()).arm_prefix() == "control:"
    assert ModelId.teacher().prefix() == "" and Arm.per_defense("x").prefix == "per-defense:x:"
    assert is_defended_name("per-defense:x:student:s") and is_defended_name("distill-defended:student:s")
    assert not is_defended_name("student:s") and not is_defended_name("defended:nonsense")
    assert is_twin_name("control:gen2:student:s") and not is_twin_name("clean_control")
    assert not is_twin_name(None) and not is_defended_name(3)


@pytest.mark.parametrize("bad", ["", "teacher:", "student:", "gen2:teacher", "gen1:student:sft", "gen02:student:sft",
                                 "gen:student:sft", "control:baseline", "main:teacher", "per-defense:teacher",
                                 "per-defense:a b:teacher", "defended:per-defense:x:teacher", "sft", "students:sft",
                                 "control:control:student:sft", "eval:teacher"])
def test_malformed_names_raise_naming_the_string(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("[", r"\[")):
        ModelId.parse(bad)
    assert ModelId.try_parse(bad) is None


def test_invalid_ids_cannot_be_built():
    for kwargs in [dict(role="student"), dict(role="teacher", student="x"), dict(role="student", student="x",
                                                                                  generation=0),
                   dict(role="teacher", generation=2), dict(role="baseline", arm=Arm.control()), dict(role="judge")]:
        with pytest.raises(ValueError):
            ModelId(**kwargs)
    with pytest.raises(ValueError):
        Arm("per-defense")
    with pytest.raises(ValueError):
        Arm("defended", "x")
    with pytest.raises(ValueError):
        Arm("other")
    with pytest.raises(ValueError):
        ModelId.single("teacher")


def test_stage_labels():
    assert stage_label("eval", ModelId.of_student("sft", 2, Arm.control())) == "eval:control:gen2:student:sft"
    assert stage_label("audit", "logit_shift", "per-defense:x:teacher") == "audit:logit_shift:per-defense:x:teacher"
    assert stage_label("defense", "train") == "defense:train"
    assert split_stage_label("eval:control:gen2:student:sft") == ("eval", "control:gen2:student:sft")
    assert split_stage_label("audit:logit_shift:per-defense:x:teacher", 2) == ("audit", "logit_shift",
                                                                             "per-defense:x:teacher")
    assert model_of("probe:student:a:b") == "student:a:b"
    for bad in ("eval", "eval:", "audit:x"):
        with pytest.raises(ValueError, match="stage label"):
            split_stage_label(bad, 2 if bad.startswith("audit") else 1)
    assert stage_of("teacher") == "teacher" and stage_of("eval:student:sft") == "eval"
    assert distill_label() == "distill_data"
    assert distill_label(Arm.control()) == "control:distill_data"
    assert distill_label(Arm(), 3) == "gen3:distill_data"
    assert distill_label(Arm.control(), 2, "own") == "control:gen2:distill_data:own"
    assert distill_label(Arm.per_defense("clf")) == "per-defense:clf:distill_data"
    assert distill_label(Arm.defended(), student="own") == "defended:distill_data:own"


def test_config_model_names_parse():
    import yaml

    from poison.schema import RunConfig
    from tests.conftest import TINY_CONFIG

    raw = yaml.safe_load(TINY_CONFIG)
    raw["students"].append({**raw["students"][0], "name": "kd"})
    raw.update(cascade={"generations": 3, "via": "kd"}, eval={**raw["eval"], "probe": True})
    names = RunConfig.model_validate(raw).model_names()
    assert names == ["baseline", "clean_control", "teacher", "student:sft", "student:kd", "gen2:student:kd",
                     "gen3:student:kd", "control:student:sft", "control:student:kd", "control:gen2:student:kd",
                     "control:gen3:student:kd"]
    assert all(str(ModelId.parse(n)) == n for n in names)
