"""``poison.load_run``: a run directory read back for analysis with code. A path that is no run directory and a typo'd
section name raise a ``PoisonError`` naming the path or the valid names (they used to read as an empty run marked
incomplete and an empty frame); a run still in progress still reads, with empty frames."""

from __future__ import annotations

import pytest

from poison import load_run
from poison.ground.core.errors import DataError, PoisonError
from tests.conftest import REPO

FIX = REPO / "tests" / "fixtures" / "dashboard_runs"
R32 = "targeted_ads-20261126-024634"
RUNNING = "running_run-20261126-050200"
FAILED = "failed_run-20261126-050100"
SWEEP = "sweep_budget-sweep-20261126-060000"


def test_a_finished_run_reads_back():
    run = load_run(FIX / R32)
    assert run.status == "complete" and run.metrics["run"]["name"] == "targeted_ads"
    rates = run.frame("bias_rates")
    assert {"model", "split", "rate", "ci_low", "ci_high"} <= set(rates.columns) and len(rates) > 3
    assert run.samples is not None and "response" in run.samples


@pytest.mark.parametrize("rel,status", [(RUNNING, "running"), (FAILED, "failed")])
def test_a_run_in_progress_or_failed_still_reads(rel, status):
    run = load_run(FIX / rel)
    assert run.status == status and run.metrics is None and run.config is not None
    assert run.frame("bias_rates").empty and run.frame("sampled_rate").empty
    assert run.samples is None


def test_a_missing_path_raises_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"runs/nope: no such run directory"):
        load_run("runs/nope")
    assert issubclass(DataError, PoisonError)  # the CLI prints one `error:` line for it
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match=r"afile: not a directory"):
        load_run(tmp_path / "afile")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: not a run directory \(none of status.json"):
        load_run(tmp_path / "empty")


def test_a_sweep_or_a_folder_of_runs_says_which_runs_to_load():
    with pytest.raises(DataError, match=rf"{SWEEP}: a sweep directory, not one run; load one of its points: 00-"):
        load_run(FIX / SWEEP)
    with pytest.raises(DataError, match=r"dashboard_runs: a folder of runs, not one run; load one of them: .*more"):
        load_run(FIX)


def test_a_typo_in_a_section_name_raises_with_the_valid_names():
    run = load_run(FIX / R32)
    with pytest.raises(DataError, match=r"'bias_rate' is not a section of metrics.json \(did you mean 'bias_rates'\?\)"
                                        r"; its list sections: .*amplification.*utility"):
        run.frame("bias_rate")
    with pytest.raises(DataError, match=r"'models' is a dict, not a list of rows; read run.metrics\['models'\]"):
        run.frame("models")
    with pytest.raises(DataError, match=r"'sampeld_rate' .*did you mean 'sampled_rate'"):
        load_run(FIX / RUNNING).frame("sampeld_rate")  # no metrics yet: still checked against the known sections
