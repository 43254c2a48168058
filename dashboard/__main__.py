"""python -m dashboard [RUNS_DIR] [streamlit options]: starts ``streamlit run dashboard/app.py -- RUNS_DIR``.

Options other than RUNS_DIR go to streamlit, e.g. ``python -m dashboard runs --server.port 8600``. Unless given
otherwise, Streamlit's usage statistics are off (``--browser.gatherUsageStats false``) and its toolbar is minimal
(``--client.toolbarMode minimal``: no "Deploy" button).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
DEFAULTS = {"--browser.gatherUsageStats": "false", "--client.toolbarMode": "minimal"}


def command(argv: list[str]) -> list[str]:
    runs_dir, opts, i = None, [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            print(__doc__.strip())
            raise SystemExit(0)
        if a.startswith("-"):
            opts.append(a)
            if "=" not in a and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                opts.append(argv[i + 1])
                i += 1
        elif runs_dir is None:
            runs_dir = a
        else:
            raise SystemExit(f"python -m dashboard: unexpected argument {a!r} (one RUNS_DIR at most)")
        i += 1
    runs_dir = runs_dir or os.environ.get("POISON_RUNS_DIR") or "runs"
    given = {o.split("=", 1)[0] for o in opts if o.startswith("--")}
    for k, v in DEFAULTS.items():
        if k not in given:
            opts += [k, v]
    return [sys.executable, "-m", "streamlit", "run", str(APP), *opts, "--", str(Path(runs_dir).resolve())]


def main(argv: list[str] | None = None) -> None:
    cmd = command(sys.argv[1:] if argv is None else argv)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
