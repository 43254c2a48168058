"""metrics.json typed (poison.ground.results): a real tiny run's file read back by the typed reader, every older run
directory of the fixtures read leniently, damaged rows and sections skipped and named, the one writer, the typed
``load_run``, the generated reference page, and the section registry (a section that is one file)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
from pydantic import Field

from poison import load_run
from poison.ground.results import (METRICS_SCHEMA_VERSION, Metrics, ReportInputs, check_metrics, read_metrics,
                                   register_section, registry)
from poison.ground.results.base import Section
from poison.ground.results.registry import add_sections, section_lines
from poison.ground.results.reference import PAGE, reference_page
from poison.ground.results.writer import write_results
from tests.conftest import REPO

TINY = REPO / "tests" / "fixtures" / "results" / "tiny-v1"
RUNS = REPO / "tests" / "fixtures" / "dashboard_runs"
#: sections the report has written since the fixture was made (a file without them reads them as empty)
ADDED_SINCE = ("defense_detection", "defense_downstream", "defense_warnings")


def tiny() -> dict:
    return json.loads((TINY / "metrics.json").read_text())


def tiny_now() -> dict:
    """The fixture with the sections added since it was written, empty, as today's report writes them."""
    out = {}
    for k, v in tiny().items():
        out[k] = v
        if k == "defense_removal":  # where the report writes them
            out.update({a: [] for a in ADDED_SINCE})
    return out


def test_a_real_run_reads_back_typed():
    raw = tiny()
    # written by the report before the models existed: every section fits them; only later sections are missing
    assert check_metrics(raw) == [f"no section {k!r}" for k in ADDED_SINCE]
    assert check_metrics({**raw, **{k: [] for k in ADDED_SINCE}}) == []
    problems: list[str] = []
    m = read_metrics(raw, problems)
    assert all(getattr(m, k) == [] for k in ADDED_SINCE)
    assert problems == [] and m.schema_version == 1
    # the splits map task -> split; the roles include the probe's clean controls
    assert m.run.splits == {"math": "target", "commonsense_qa": "other"}
    assert {v.role for v in m.models.values()} == {"baseline", "control", "teacher", "student"}
    assert m.poison.injected == 6 == raw["poison"]["injected"]
    assert [(r.model, r.split, r.biased, r.n, r.rate) for r in m.bias_rates] == [
        (r["model"], r["split"], r["biased"], r["n"], r["rate"]) for r in raw["bias_rates"]]
    assert m.bias_rates[0].detector_corrected.n_labelled == raw["bias_rates"][0]["detector_corrected"]["n_labelled"]
    shift = next(r for r in m.logprob_shift if r.vs_null is not None)
    assert shift.vs_null.p_value is None and shift.vs_null.note.startswith("one null draw")
    assert {d.place for d in m.defenses} == {"train", "distill", "distill_after_train"}
    assert m.claims.primary.comparison == raw["claims"]["primary"]["comparison"]
    assert all(s.cached is False and len(s.key) == 16 for s in m.stages.values())
    # fields the models do not name are kept (precision_ci of the detector, a defense's info)
    assert m.detector_accuracy.model_extra["precision_ci"] == raw["detector_accuracy"]["precision_ci"]
    # item access reads the file's own JSON
    assert m["run"]["name"] == "tiny" and "bias_rates" in m and m.get("nope", 3) == 3


def test_every_older_run_directory_reads_without_problems():
    files = sorted(RUNS.glob("*/metrics.json")) + sorted(RUNS.glob("*/*/metrics.json"))
    read = 0
    for f in files:
        try:
            raw = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue  # the truncated fixture
        problems: list[str] = []
        m = read_metrics(raw, problems)
        assert problems == [], (f, problems)
        assert m.run.name == raw["run"]["name"] and len(m.bias_rates) == len(raw["bias_rates"]) > 0
        for k, field in Metrics.model_fields.items():  # a section the file lacks reads as its default
            if k not in raw:
                assert getattr(m, k) == field.get_default(call_default_factory=True), (f, k)
        assert m.replicates is None if "replicates" not in raw else m.replicates.n == raw["replicates"]["n"]
        read += 1
    assert read >= 15


def test_damaged_rows_and_sections_are_skipped_and_named():
    raw = tiny()
    raw["bias_rates"][1]["n"] = "many"
    raw["probe"] = ["not", "an", "object"]
    raw["schema_version"] = METRICS_SCHEMA_VERSION + 1
    raw["brand_new_section"] = [{"x": 1}]
    problems: list[str] = []
    m = read_metrics(raw, problems)
    assert len(m.bias_rates) == len(raw["bias_rates"]) - 1 and m.bias_rates[1].model == raw["bias_rates"][2]["model"]
    assert m.probe is None and m.model_extra["brand_new_section"] == [{"x": 1}]
    assert any("newer than this reader's" in p for p in problems)
    assert any(p.startswith("metrics.json: bias_rates[1] skipped (bias_rates[1].n:") for p in problems)
    assert any(p.startswith("metrics.json: probe unreadable, read as empty") for p in problems)
    strict = check_metrics(raw)
    assert "section 'brand_new_section' has no model (poison.ground.results)" in strict
    assert any(p.startswith("bias_rates[1].n:") for p in strict)


def test_the_writer_writes_the_metrics_unchanged_and_the_summary_with_the_runs_seconds(tmp_path):
    raw = tiny_now()
    seconds = raw["run"].pop("seconds")  # as the report writes it, before the run ends
    assert write_results(tmp_path, raw, "TABLE") == []
    assert json.loads((tmp_path / "metrics.json").read_text()) == raw
    assert (tmp_path / "summary.txt").read_text() == "TABLE\n"  # the report's write: no seconds yet
    raw["run"]["seconds"] = seconds  # the runner's write
    write_results(tmp_path, raw, "TABLE")
    assert (tmp_path / "summary.txt").read_text() == f"TABLE\n\nrun directory: {tmp_path}  ({seconds:.0f}s)\n"
    assert json.loads((tmp_path / "metrics.json").read_text()) == tiny_now()
    raw["bias_rates"][0]["n"] = None
    with pytest.raises(ValueError, match=r"bias_rates\[0\]\.n"):
        write_results(tmp_path, raw, "TABLE", strict=True)
    assert write_results(tmp_path, raw, "TABLE") == ["bias_rates[0].n: Input should be a valid integer"]


def test_load_run_returns_the_typed_metrics(tmp_path):
    shutil.copytree(TINY, tmp_path / "tiny-20261205-120000")
    run = load_run(tmp_path / "tiny-20261205-120000")
    assert isinstance(run.metrics, Metrics) and run.status == "complete" and run.problems == []
    assert run.metrics.run.name == run.metrics["run"]["name"] == "tiny"
    assert list(run.frame("bias_rates").rate) == [r.rate for r in run.metrics.bias_rates]
    assert run.frame("degeneration").shape[0] == len(run.metrics.degeneration) > 0


def test_the_reference_page_is_generated_from_the_models():
    assert PAGE.read_text(encoding="utf-8") == reference_page(), \
        "docs/results-schema.md is out of date: python -m poison.ground.results.reference"
    page = reference_page()
    for name in [*Metrics.model_fields, "replicates"]:
        assert f"| `{name}` |" in page
    assert "| `splits` | {str: str} |" in page and "task -> its split" in page
    assert "baseline / teacher / student / control" in page


def test_the_summary_of_a_run_written_before_the_registry_is_unchanged():
    from poison.summary import summary_table

    raw = tiny()  # its summary.txt was written by the report of the code before this package, from this file
    assert summary_table(raw) + "\n" == (TINY / "summary.txt").read_text()
    assert "\nEvidence: one training seed and one data draw" in summary_table(raw)  # the registered section's line


def test_a_registered_section_is_computed_placed_read_checked_and_documented():
    raw = tiny_now()
    replicates = raw.pop("replicates")
    inputs = ReportInputs(cfg=SimpleNamespace(replicates=SimpleNamespace(n=1, index=0, vary=("train_seed",
                                                                                           "data_draw"))),
                          models=raw["models"], samples=None, drawn=None, probe=None, conf=0.95, n_boot=100,
                          metrics=raw)
    out = add_sections(raw, inputs)
    assert list(out) == list(tiny_now()) and out["replicates"] == replicates  # same place, same value

    class Mentions(Section):
        """How many answers mention the brand."""

        n: int = Field(description="answers")

    def lines(m):
        return [f"mentions: {m['mentions']['n']}"]

    try:
        register_section("mentions", Mentions, summary=lines, description="answers naming the brand")(
            lambda i: {"n": len(i.models)})
        out = add_sections(raw, inputs)
        assert list(out)[-2:] == ["mentions", "stages"] and out["mentions"] == {"n": len(raw["models"])}
        assert check_metrics(out) == []
        assert read_metrics(out).mentions.n == len(raw["models"])
        assert section_lines(out, "tail") == [f"mentions: {len(raw['models'])}"]
        assert "| `mentions` | [Mentions](#mentions) | answers naming the brand" in reference_page()
        out["mentions"] = {"n": "lots"}
        assert check_metrics(out) == ["mentions.n: Input should be a valid integer, unable to parse string as an "
                                      "integer"]
        problems: list[str] = []
        assert "mentions" not in (read_metrics(out, problems).model_extra or {})
        assert problems[0].startswith("metrics.json: mentions unreadable, left out (mentions.n:")
    finally:
        registry._SECTIONS.pop("mentions", None)
    assert "| `mentions` |" not in reference_page() and "mentions" not in {s.name for s in registry.sections()}
