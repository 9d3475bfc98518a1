"""Time `tlpo lcb score` end to end, start-up included, on LCB output files.

Runs the installed `tlpo` command in a fresh process per repeat, as a user would. Prints
per file the best and median wall time, the best CPU time (user + system) and that CPU
time minus the start-up's, and whether the TSV output matches the official table in
`expected/<model>.tsv` to the printed decimals.

    python benchmarks/lcb_score_speed.py [--lcb-dir DIR] [--repeats 3]

DIR is the LCB data folder with `outputs/`, `expected/` and `english_words.txt`
(default: $TLPO_LCB_DIR, else `shared/lcb` beside the checkout, where the tests look).
"""

from __future__ import annotations

import argparse
import os
import resource
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


def time_run(command: list[str], env: dict | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run `command`; return its wall time, its CPU time (user + system) and the result.

    On a busy machine, CPU time is the steadier number: in runs on 2 shared cores it
    stayed within about 15% of the idle-machine wall time of this single-threaded command.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result


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

    start_up = [time_run([*tlpo, "--version"])[:2] for _ in range(args.repeats)]
    start_up_wall = min(wall for wall, _ in start_up)
    start_up_cpu = min(cpu for _, cpu in start_up)
    print(f"start-up alone (tlpo --version): best {start_up_wall:.2f} s wall, {start_up_cpu:.2f} s CPU\n")

    rows = []
    for path in outputs:
        command = [*tlpo, "lcb", "score", str(path), "--format", "tsv", "--no-progress",
                   "--lcb-dir", str(args.lcb_dir)]
        walls, cpus = [], []
        for _ in range(args.repeats):
            wall, cpu, result = time_run(command)
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return 1
            walls.append(wall)
            cpus.append(cpu)
        status = compare_with_expected(result.stdout, args.lcb_dir / "expected" / f"{path.stem}.tsv")
        rows.append((path.name, min(walls), statistics.median(walls), min(cpus), status))

    # jieba caches its parsed dictionary in the temporary folder; an empty one shows the
    # cost of the very first run on a machine.
    with tempfile.TemporaryDirectory() as fresh_temp:
        first_wall, first_cpu, _ = time_run(command, env={**os.environ, "TMPDIR": fresh_temp})

    # "CPU - start-up" estimates the scoring alone: best CPU time minus the best CPU time
    # of `tlpo --version`, which builds the same parser.
    name_width = max(len(r[0]) for r in rows)
    print(
        f"{'file':<{name_width}}  {'best wall s':>11}  {'median wall s':>13}  "
        f"{'best CPU s':>10}  {'CPU - start-up s':>16}  official table"
    )
    for name, best, median, cpu, status in rows:
        print(
            f"{name:<{name_width}}  {best:11.2f}  {median:13.2f}  {cpu:10.2f}  "
            f"{cpu - start_up_cpu:16.2f}  {status}"
        )
    print(
        f"\nfirst run with an empty jieba cache ({outputs[-1].name}): "
        f"{first_wall:.2f} s wall, {first_cpu:.2f} s CPU"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
