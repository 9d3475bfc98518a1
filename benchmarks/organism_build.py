"""Build the embedded default model and measure it.

Prints the build's wall time and CPU time, the load average while it ran, then the
per-language RPR at temperature 0.7 (4 samples per held-out prompt), the greedy RPR
and the probe score, as a table and as JSON. With `--repeat-build` it builds a second
time with the same seed and prints whether `model.safetensors` has the same bytes.

    python benchmarks/organism_build.py [--size small] [--seed 0] [--out DIR] [--repeat-build]

The build runs on one thread (`tlpo.organism.BUILD_THREADS`), so on a shared machine the
CPU time is the better estimate of the wall time on a free core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from tlpo.organism import build_organism, evaluate_organism, format_evaluation


def build(out: Path, seed: int, size: str) -> tuple[Path, dict]:
    load_before = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    folder = build_organism(out, seed=seed, size=size)
    timing = {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }
    return folder, timing


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("small", "tiny"), default="small", help="organism size (default: small)")
    parser.add_argument("--seed", type=int, default=0, help="build seed (default: 0)")
    parser.add_argument("--out", type=Path, help="keep the model in this folder (default: a temporary folder, deleted)")
    parser.add_argument("--samples", type=int, default=4, help="samples per held-out prompt at temperature 0.7 (default: 4)")
    parser.add_argument("--repeat-build", action="store_true", help="build again with the same seed and compare model.safetensors")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tlpo-organism-bench-"))
    try:
        out = args.out or workdir / "model"
        folder, timing = build(out, args.seed, args.size)
        print(f"build: {timing['wall_seconds']} s wall, {timing['cpu_seconds']} s CPU, "
              f"load average {timing['load_average_before']:.1f} -> {timing['load_average_after']:.1f} "
              f"on {timing['cpu_count']} cores")
        report = {"size": args.size, "seed": args.seed, "build": timing}
        if args.repeat_build:
            again, _ = build(workdir / "again", args.seed, args.size)
            same = sha256(folder / "model.safetensors") == sha256(again / "model.safetensors")
            report["same_bytes_on_rebuild"] = same
            print(f"rebuild with seed {args.seed}: model.safetensors bytes {'identical' if same else 'DIFFERENT'}")
        started = time.perf_counter()
        result = evaluate_organism(folder, temperature=0.7, num_samples=args.samples)
        report["evaluation_seconds"] = round(time.perf_counter() - started, 1)
        report["evaluation"] = result
        print(format_evaluation(result))
        print(json.dumps(report, indent=2, ensure_ascii=False))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
