"""A nightly run over a published selection of the shipped matrix: wall time, jobs built.

First makes sure the selection is published on the lab registry (``run --mode main``, as
``nox -s pipeline`` does; untimed, and quick when it already is), then times
``python -m pipeline run --mode nightly`` over the same selection, as a scheduled job runs
it.  Prints the wall time and how many jobs it built.  Needs the lab.
Target: 0 built, under 30 s.

    python benchmarks/bench_nightly.py [--select GLOBS]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SELECT = "sjtuhpc/hpc-app-container:lammps-gnu-2022@*"


def run(out: Path, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--out", str(out), *args],
                          cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"the run failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--select", default=DEFAULT_SELECT)
    select = parser.parse_args().select
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp) / "publish", "--mode", "main", "--select", select)
        start = time.perf_counter()
        summary = run(Path(tmp) / "nightly", "--mode", "nightly", "--select", select)
        seconds = time.perf_counter() - start
    jobs = summary["jobs"]
    built = sum(1 for j in jobs if j["stages"].get("build", {}).get("cached") is False)
    pushed = len(summary["publications"])
    print(f"nightly run over {len(jobs)} published jobs ({select}): {seconds:.1f} s wall, "
          f"{built} built, {pushed} tags pushed")


if __name__ == "__main__":
    main()
