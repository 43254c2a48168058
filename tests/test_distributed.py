"""The multi-process path: `accelerate launch` with 2 CPU processes (gloo) runs the whole pipeline on tiny models;
training stages run data-parallel, every other stage once, and the run directory is written once."""

import json
import os
import subprocess
import sys

import pandas as pd

from tests.conftest import REPO, TINY_CONFIG, dirs


def test_accelerate_two_cpu_processes(tmp_path, models_dir):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    flat = dirs(tmp_path, models_dir)
    sets = [x for i in range(0, len(flat), 2) for x in ("--set", flat[i + 1])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POISON_RANK_WAIT_S": "900"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / "cpu2.yaml"), "--num_cpu_threads_per_process", "1",
           "-m", "poison.run", str(cfg), *sets]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    runs = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    assert len(runs) == 1, runs  # only the main process writes a run directory
    rd = runs[0]
    m = json.loads((rd / "metrics.json").read_text())
    assert json.loads((rd / "status.json").read_text())["status"] == "complete"
    stages = json.loads((rd / "stages.json").read_text())
    teacher_log = json.loads(open(os.path.join(stages["teacher"]["path"], "train_log.json")).read())
    student_log = json.loads(open(os.path.join(stages["student:sft"]["path"], "train_log.json")).read())
    # both training stages ran in 2 processes: the global batch is 2 x 4, so fewer optimizer steps on the same rows
    assert teacher_log["processes"] == 2 and student_log["processes"] == 2
    assert teacher_log["steps"] == 6  # 20 rows / (4 x 2) -> 3 steps per epoch, 2 epochs (one process: 10)
    assert student_log["steps"] == 2  # 10 distillation rows / 8 -> 2 steps, 1 epoch
    samples = pd.read_parquet(rd / "samples.parquet")
    assert set(samples.model) == {"baseline", "teacher", "student:sft"}
    assert m["poison"]["injected"] == 6
