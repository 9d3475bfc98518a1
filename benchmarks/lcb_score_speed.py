"""Time `tlpo lcb score` end to end, start-up included, on LCB output files.

Runs the installed `tlpo` command in a fresh process per repeat, as a user would. Prints
the wall time per file (best, median and worst of the repeats) and whether the TSV
output matches the official table in `expected/<model>.tsv` to the printed decimals.

    python benchmarks/lcb_score_speed.py [--lcb-dir DIR] [--repeats 3]

DIR is the LCB data folder with `outputs/`, `expected/` and `english_words.txt`
(default: $TLPO_LCB_DIR, else `shared/lcb` beside the checkout, where the tests look).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_lcb_dir() -> Path:
    if os.environ.get("TLPO_LCB_DIR"):
        return Path(os.environ["TLPO_LCB_DIR"])
    return REPO_ROOT.parent / "shared" / "lcb"


def tlpo_command() -> list[str]:
    executable = shutil.which("tlpo", path=str(Path(sys.executable).parent))
    return [executable] if executable else [sys.executable, "-m", "tlpo"]


def time_run(command: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, result


def compare_with_expected(tsv: str, expected: Path) -> str:
    if not expected.is_file():
        return "no expected file"
    got = [line.split("\t")[:6] for line in tsv.splitlines()]
    want = [line.split("\t") for line in expected.read_text(encoding="utf-8").splitlines()]
    if len(got) != len(want):
        return f"{len(got)} rows, expected {len(want)}"
    differing = sum(g != w for g, w in zip(got, want))
    return "all rows match" if differing == 0 else f"{differing} rows differ"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lcb-dir", type=Path, default=default_lcb_dir(), help="LCB data folder")
    parser.add_argument("--repeats", type=int, default=3, help="runs per file (default 3)")
    args = parser.parse_args()

    outputs = sorted((args.lcb_dir / "outputs").glob("*.csv"))
    if not outputs:
        print(f"no LCB output files in {args.lcb_dir / 'outputs'}; pass --lcb-dir", file=sys.stderr)
        return 2
    tlpo = tlpo_command()
    print(f"command: {' '.join(tlpo)} lcb score FILE --format tsv --no-progress")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.repeats} runs per file")

    start_up = [time_run([*tlpo, "--version"])[0] for _ in range(args.repeats)]
    print(f"start-up alone (tlpo --version): best {min(start_up):.2f} s\n")

    rows = []
    for path in outputs:
        command = [*tlpo, "lcb", "score", str(path), "--format", "tsv", "--no-progress",
                   "--lcb-dir", str(args.lcb_dir)]
        times = []
        for _ in range(args.repeats):
            seconds, result = time_run(command)
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return 1
            times.append(seconds)
        status = compare_with_expected(result.stdout, args.lcb_dir / "expected" / f"{path.stem}.tsv")
        rows.append((path.name, min(times), statistics.median(times), max(times), status))

    # jieba caches its parsed dictionary in the temporary folder; an empty one shows the
    # cost of the very first run on a machine.
    with tempfile.TemporaryDirectory() as fresh_temp:
        first_run, _ = time_run(command, env={**os.environ, "TMPDIR": fresh_temp})

    name_width = max(len(r[0]) for r in rows)
    print(f"{'file':<{name_width}}  {'best s':>7}  {'median s':>8}  {'worst s':>7}  official table")
    for name, best, median, worst, status in rows:
        print(f"{name:<{name_width}}  {best:7.2f}  {median:8.2f}  {worst:7.2f}  {status}")
    print(f"\nfirst run with an empty jieba cache ({outputs[-1].name}): {first_run:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
