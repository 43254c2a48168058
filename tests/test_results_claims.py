"""The results page's parts for claims asked by rates (scripts/results_claims.py): tables built from a real sweep's
sweep.json (the archived latent-cascade sweep, docs/results/data/latent_cascade), the reading's three verdicts from
the ratio's interval, and the page for a sweep that has no brand-swap contrast; the utility and degeneration table
(scripts/results_utility.py) from the archived smaller-student sweep's runs."""

import copy
import json
import shutil
from pathlib import Path

from poison import load_run

from scripts import results_claims, results_utility
from scripts.results_page import main as results_page
from tests.conftest import REPO

ARCHIVED = REPO / "docs" / "results" / "data" / "latent_cascade"


def sweep():
    return json.loads((ARCHIVED / "sweep.json").read_text())


def test_tables_carry_the_sweeps_figures():
    s = sweep()
    probe = results_claims.probe_table(s)
    row = next(r for r in s["probe_null"] if r["wording"] == "seen" and r["model"] == "student:kd"
               and r["split"] == "target" and r["group"] == "arm=A")
    line = next(x for x in probe if x.startswith("| arm=A | student:kd | target |"))
    assert f"{row['excess']:.3f}" in line and f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]" in line
    amp_lines, amp_rows = results_claims.amplification_table(s)
    assert len(amp_rows) == len(s["replicate_amplification"])
    assert sum(x.startswith("| arm=") for x in amp_lines) == len(amp_rows)


def test_pages_say_when_a_student_is_not_the_teachers_base_model():
    import yaml

    same = yaml.safe_load((REPO / "configs" / "claims" / "latent_cascade.yaml").read_text())
    smaller = yaml.safe_load((REPO / "configs" / "claims" / "smaller_student.yaml").read_text())
    assert results_claims.other_students(same) == {}
    assert results_claims.other_students(smaller) == {"student:sft": "smollm2-135m-instruct@layers=15",
                                                      "student:kd": "smollm2-135m-instruct@layers=15"}
    assert "each student is the teacher's own base model" in results_claims.family_sentence(same)
    assert "student:kd (`smollm2-135m-instruct@layers=15`)" in results_claims.family_sentence(smaller)
    # the probe table warns that a smaller student's shift against the (teacher-base) clean control mixes the models
    assert not any("another model than the teacher's base" in x for x in results_claims.probe_table(sweep(), same))
    note = [x for x in results_claims.probe_table(sweep(), smaller) if "another model than the teacher's base" in x]
    assert len(note) == 1 and note[0].startswith("student:kd, student:sft:")


def test_reading_follows_the_interval():
    base = {"group": "base", "measure": "sampled", "split": "other", "student": "student:sft", "teacher": "teacher",
            "n_replicates": 5}
    rows = [{**base, "ratio": 2.0, "ci_low": 1.3, "ci_high": 3.1},
            {**base, "split": "target", "ratio": 0.5, "ci_low": 0.3, "ci_high": 0.8},
            {**base, "student": "student:kd", "ratio": 1.1, "ci_low": 0.7, "ci_high": 1.6},
            {**base, "student": "student:x", "ratio": None, "ci_low": None, "ci_high": None},
            {**base, "student": "student:y", "ratio": 3.0, "ci_low": 0.4, "ci_high": None}]
    text = "\n".join(results_claims.reading(rows))
    assert "above 1: consistent with amplification" in text and "below 1" in text and "includes 1" in text
    assert "no ratio over 5 replicate(s)" in text and "no upper bound (a zero count" in text
    only_other = "\n".join(results_claims.reading(rows, focus_split="other"))
    assert "below 1" not in only_other and "above 1" in only_other


def test_a_sweep_without_the_brand_swap_gets_a_rate_plot_and_the_ratio_reading(tmp_path):
    src = tmp_path / "sweep"
    shutil.copytree(ARCHIVED, src)
    s = sweep()
    s2 = copy.deepcopy(s)
    s2["brand_swap"], s2["brand_swap_pairs"] = [], []
    s2["replicate_amplification"][0].update(ratio=1.5, ci_low=1.2, ci_high=1.9)
    (src / "sweep.json").write_text(json.dumps(s2))
    out = tmp_path / "out"
    assert results_page([str(src), "--name", "rates", "--out", str(out)]) == 0
    page = (out / "rates.md").read_text()
    assert "![biased rates per model](rates.png)" in page and (out / "rates.png").stat().st_size > 0
    assert "## Student against teacher" in page and "above 1: consistent with amplification" in page
    assert "## The brand-swap contrast D" not in page


def test_rebuilding_a_page_from_its_own_archive_keeps_the_archive(tmp_path):
    arch = tmp_path / "data" / "swap"
    shutil.copytree(ARCHIVED, arch)
    before = sorted(p.relative_to(arch) for p in arch.rglob("*"))
    assert results_page([str(arch), "--name", "swap", "--out", str(tmp_path), "--archive"]) == 0
    assert sorted(p.relative_to(arch) for p in arch.rglob("*")) == before
    assert "[`data/swap/`](data/swap/)" in (tmp_path / "swap.md").read_text()  # the page still links its data


def test_utility_table_averages_replicates_and_pairs_each_poisoned_model_with_its_clean_twin():
    arch = REPO / "docs" / "results" / "data" / "smaller_student"
    s = json.loads((arch / "sweep.json").read_text())
    runs = [load_run(arch / Path(r["run_dir"]).name) for r in s["runs"]]
    lines = results_utility.utility_table(s, runs)
    # the teacher of arm A: its ROUGE-L is the mean of the arm's five runs' own figures
    arm_a = [r for r in runs if r.path.name.endswith("arm=A")]
    def rouge_of(run, model):
        return next(u["value"] for u in run.metrics["utility"] if u["model"] == model and u["metric"] == "rouge_l")

    rouge = [rouge_of(r, "teacher") for r in arm_a]
    row = next(x for x in lines if x.startswith("| arm=A | teacher | teacher |"))
    assert f" {sum(rouge) / len(rouge):.2f} [" in row and row.endswith("| 5 |")
    # models both arms share are listed once, as group "all"; no arm repeats them
    assert sum(x.startswith("| all | clean_control |") for x in lines) == 1
    assert not any(x.startswith("| arm=B | clean_control |") for x in lines)
    # every share's interval stays within 0-100 % (a t interval over 5 replicates alone would leave it)
    degen = next(x for x in lines if x.startswith("| all | control:student:kd |"))
    assert "[0.0, 100.0]" in degen
    # each poisoned model against its twin, paired over the replicates: the teacher's ROUGE-L difference
    clean = [rouge_of(r, "clean_control") for r in arm_a]
    diff = sum(a - b for a, b in zip(rouge, clean)) / len(rouge)
    twin = next(x for x in lines if x.startswith("| arm=A | teacher − clean_control |"))
    assert f"{diff:+.3f} [" in twin
    assert any(x.startswith("| arm=B | student:kd − control:student:kd |") for x in lines)


def test_every_published_page_is_what_its_rebuild_command_makes_from_its_archive(tmp_path):
    """A results page in docs/results/ that archives its runs names its rebuild command; run today on the archive, the
    command gives the same page (all but the date it was built): no page drifts from its data or from the script."""
    import shlex

    pages = [p for p in sorted((REPO / "docs" / "results").glob("*.md")) if "| rebuild | `" in p.read_text()]
    assert {p.stem for p in pages} >= {"latent_cascade", "smaller_student", "untargeted_unseen"}
    for page in pages:
        lines = page.read_text().splitlines()
        cmd = next(x for x in lines if x.startswith("| rebuild | `")).split("`")[1]
        claim = next(x for x in lines if x.startswith("**The paper's claim asked here:** ")).split(":** ", 1)[1]
        argv = [claim if a == "<the claim above>" else a for a in shlex.split(cmd)[2:]]
        argv[0] = str(REPO / argv[0])
        assert results_page(argv + ["--out", str(tmp_path)]) == 0
        rebuilt = (tmp_path / page.name).read_text().splitlines()
        assert [x for x in rebuilt if not x.startswith("| page built |")] == \
            [x for x in lines if not x.startswith("| page built |")], page.name


def test_labels_table_sets_each_student_against_the_labels_it_learned_from():
    from scripts import results_labels

    s = sweep()
    runs = [load_run(ARCHIVED / Path(r["run_dir"]).name) for r in s["runs"]]
    lines = results_labels.labels_table(s, runs)
    arm_a = [r for r in runs if r.path.name.endswith("arm=A")]
    # the sampled-label student learned from its own set, the others from the shared greedy set
    own = [next(b["rate"] for b in r.metrics["distill_data"]["per_student"]["sft_sampled"]["bias_rates"]
                if b["split"] == "target") for r in arm_a]
    row = next(x for x in lines if x.startswith("| arm=A | student:sft_sampled | target | its own distillation set |"))
    assert row.split(" | ")[4].startswith(f"{100 * sum(own) / len(own):.1f}")
    shared = next(x for x in lines if x.startswith("| arm=A | student:kd | target |"))
    assert "| the shared greedy set |" in shared and shared.endswith("| 5 |")
    # no clean twin and no later generation is listed as a student
    assert not any("control:" in x for x in lines)


def test_the_reading_names_how_many_machines_made_the_runs():
    assert results_claims.family_sentence(None).startswith("One machine, one model family")
    two = results_claims.family_sentence(None, n_machines=2)
    assert two.startswith("2 machines (see the header") and "one model family" in two
