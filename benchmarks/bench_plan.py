"""Plan a synthetic catalogue of thousands of cells, with change detection against git.

Prints ``planned N cells in S s`` (the best of a few runs of the whole ``plan`` command
path: load, check, expand, hash recipes, plan the revision, compare, decide).
Target: under 1 s on the 2-core lab machine.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.planning.planner import make_plan

OSES = [f"os{i}" for i in range(8)]
GCCS = [str(v) for v in range(7, 15)]
MPIS = ["none", "ompi-4.0", "ompi-4.1", "ompi-5.0", "mpich-4.0", "mpich-4.2"]


def catalogue() -> str:
    os_values = "\n".join(
        f"      {o}: {{bootstrap: {{suite: s{o}, mirror: 'http://m'}}, defaults: {{gcc: '12'}}}}"
        for o in OSES)
    axes = f"os: {OSES}, gcc: {GCCS}, mpi: {MPIS}, arch: [amd64, arm64]"
    return f"""\
repositories: {{base: b/base, gpu: b/base, app: b/app}}
targets: {{local: {{registry: '127.0.0.1:5000'}}}}
axes:
  os:
    default: os0
    values:
{os_values}
  gcc: {{values: {GCCS}}}
  cuda: {{default: none, values: {{none: {{tag: ''}}, '11.8': {{}}, '12.4': {{}}}}}}
  mpi: {{default: none, prefix: '', values: {MPIS}}}
  arch: {{default: amd64, values: [amd64, arm64]}}
constraints:
  - if: {{cuda: '11.8'}}
    then: {{gcc: {{max: '11'}}}}
    reason: CUDA 11.8 supports GCC up to 11
images:
  - name: base
    kind: base
    recipe: images/base
    axes: {{{axes}}}
  - name: gpu
    kind: gpu
    recipe: images/gpu
    base: base
    axes: {{{axes}, cuda: ['11.8', '12.4']}}
  - name: app
    kind: app
    recipe: images/app
    base: base
    axes: {{{axes}}}
    tag: 'app-{{default}}'
"""


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "matrix.yaml").write_text(catalogue())
        for recipe in ("base", "gpu", "app"):
            (root / "images" / recipe).mkdir(parents=True)
            (root / "images" / recipe / "Dockerfile").write_text(f"FROM scratch\n# {recipe}\n")
        git(root, "init", "-q", "-b", "main")
        git(root, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "--allow-empty",
            "-m", "empty")
        git(root, "add", "-A")
        git(root, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", "catalogue")
        (root / "images/app/Dockerfile").write_text("FROM scratch\n# app, changed\n")

        timings = []
        for _ in range(3):
            start = time.perf_counter()
            jobs = make_plan(root / "matrix.yaml", "pr", "HEAD")
            timings.append(time.perf_counter() - start)
        built = sum(j.action == "build" for j in jobs)
        expected = sum(1 for j in jobs if j.image == "app")
        if built != expected:
            sys.exit(f"change detection is wrong: {built} to build, expected {expected}")
        print(f"planned {len(jobs)} cells in {min(timings):.2f} s")
        print(f"  (best of 3; {built} to build after one recipe change, "
              f"{len(jobs) - built} skipped)", file=sys.stderr)


if __name__ == "__main__":
    main()
