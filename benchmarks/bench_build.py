"""Cold build of one base cell versus a warm rebuild with nothing changed.

Cold: Docker's build cache pruned and a fresh build_id (the OS root filesystem stays
cached in the lab, as it does between runs).  Warm: the same command again.  Both are
the whole ``python -m pipeline run`` command, as a user runs it.  Needs the lab
(``python -m pipeline lab up``).  Target: warm/cold <= 0.1.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CATALOGUE = """\
repositories: {base: factorybench/base, gpu: factorybench/base, app: factorybench/app}
targets: {local: {registry: "127.0.0.1:5000"}}
axes:
  os:
    default: debian12
    values:
      debian12:
        bootstrap: {suite: bookworm, mirror: "http://deb.debian.org/debian"}
        defaults: {gcc: "12"}
  gcc: {values: ["12"]}
  mpi:
    prefix: ""
    values: {ompi-4.1: {family: openmpi, version: "4.1"}}
  arch: {default: amd64, values: [amd64]}
images:
  - name: base
    kind: base
    recipe: images/base/debian
    axes: {os: [debian12], mpi: [ompi-4.1], arch: [amd64]}
"""


def timed_run(root: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--matrix",
                           str(root / "matrix.yaml"), "--out", str(root / "out")],
                          cwd=REPO, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"the run failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "images/base/debian", root / "images/base/debian")
        (root / "images/base/debian/.bench").write_text(uuid.uuid4().hex)
        (root / "matrix.yaml").write_text(CATALOGUE)
        subprocess.run(["/usr/bin/docker", "builder", "prune", "-af"], capture_output=True,
                       check=True)
        cold = timed_run(root)
        warm = timed_run(root)
    print(f"cold build of one base cell: {cold:.1f} s")
    print(f"warm rebuild, nothing changed: {warm:.2f} s")
    print(f"warm/cold ratio: {warm / cold:.3f}")


if __name__ == "__main__":
    main()
