"""scripts/dose_units.py on two hand-written sweeps laid out like configs/claims/dose_units_{share,size}.yaml's: the
reader takes each run's dose units and probe shift from metrics.json, and the joint fit credits the unit the shift
was made from (here the count) and not the other; the page names its sweeps and machine, draws the shift per unit and
reads the joint fit, and refuses to tell apart units that move together in every run."""

import json

import numpy as np

from scripts.dose_units import fit, main, read_runs, table


def sweep(root, name, points, rng):
    sd = root / name
    runs = []
    for i, (count, task_rows) in enumerate(points):
        for rep in range(3):
            rd = sd / f"{i:02d}-{rep}"
            rd.mkdir(parents=True)
            shift = 0.5 * np.log(count) + rng.normal(0, 0.02)
            m = {"poison": {"injected": count, "target_task_rate": count / task_rows, "rate": 1 / 7},
                 "logprob_shift": [{"model": "teacher", "split": "target", "wording": "seen",
                                    "control": "clean_control", "shift": shift},
                                   {"model": "teacher", "split": "other", "wording": "seen",
                                    "control": "clean_control", "shift": 0.0}],
                 "bias_rates": [{"model": "teacher", "split": "target", "rate": 0.1}]}
            (rd / "metrics.json").write_text(json.dumps(m))
            runs.append({"point": {"seeds": rep}, "run_dir": str(rd)})
    (sd / "sweep.json").write_text(json.dumps({"runs": runs}))
    return sd


def test_the_joint_fit_credits_the_unit_that_moves_the_shift(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a = sweep(tmp_path, "share", [(8, 8), (8, 16), (8, 32), (8, 48)], rng)
    b = sweep(tmp_path, "size", [(4, 16), (8, 32), (16, 64), (32, 128)], rng)
    df = read_runs([a, b], "teacher", "target", "seen")
    assert len(df) == 24 and set(df["count"]) == {4, 8, 16, 32} and df["set_share"].nunique() == 1
    lines = table(df)
    assert "the set share is constant" in lines[0]
    joint = {line.split(" | ")[1]: line for line in lines if line.startswith("| count + task_share |")}
    coef = float(joint["poisoned rows"].split(" | ")[2])
    lo, hi = (float(x) for x in joint["poisoned rows"].split(" | ")[3].strip("[]").split(", "))
    assert abs(coef - 0.5) < 0.05 and lo > 0
    res, n = fit(df, ["count", "task_share"])
    assert n == 24 and res.pvalues["task_share"] > 0.01 and res.pvalues["count"] < 1e-6
    assert abs(res.params["task_share"]) < 0.05
    out = tmp_path / "units.md"
    assert main([str(a), str(b), "--out", str(out)]) == 0 and "| count + task_share |" in out.read_text()
    assert main([str(tmp_path / "nope")]) == 2 and "error:" in capsys.readouterr().err


def test_the_page_names_its_sources_reads_the_joint_fit_and_refuses_units_that_move_together(tmp_path):
    rng = np.random.default_rng(1)
    a = sweep(tmp_path, "share", [(8, 8), (8, 16), (8, 32), (8, 48)], rng)
    b = sweep(tmp_path, "size", [(4, 16), (8, 32), (16, 64), (32, 128)], rng)
    out = tmp_path / "page" / "units.md"
    out.parent.mkdir()
    assert main([str(a), str(b), "--out", str(out), "--claim", "which unit"]) == 0
    page = out.read_text()
    assert "**The paper's claim asked here:** which unit" in page and "| sweep `share` |" in page
    assert "12 of 12 runs" in page and "![shift per dose unit](units.png)" in page
    assert (out.parent / "units.png").stat().st_size > 0
    reading = page.split("## Reading")[1].split("## Per run")[0]
    assert "**poisoned rows**" in reading and "excludes 0: it predicts the shift beyond the other unit" in reading
    assert "**share of the target task's rows**" in reading and "includes 0: no evidence" in reading
    # one plain dose sweep: the count and the task share move together, and the page says it cannot tell them apart
    plain = sweep(tmp_path, "plain", [(4, 32), (8, 32), (16, 32)], rng)
    df = read_runs([plain], "teacher", "target", "seen")
    assert "move together in every run" in table(df)[0]
    assert not any(x.startswith("| count + task_share |") for x in table(df))
    assert main([str(plain), "--out", str(tmp_path / "one.md")]) == 0
    assert "cannot say which of them the shift follows" in (tmp_path / "one.md").read_text()
