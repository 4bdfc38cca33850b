"""The one pipeline run that the app, catalogue and cluster tests share (session fixture
``apps_run`` in conftest.py): a Debian 12 catalogue (amd64) with

* base cells with MPICH 4.0 and Open MPI 4.1;
* ``lammps``: the real LAMMPS recipe (its workload on 2 ranks), published: the cluster
  tests pull it, load its module and run it under Slurm;
* ``lammps-broken``: the real LAMMPS recipe plus one step, MPICH installed and made the
  ``mpirun`` alternative (as a careless recipe might): the Open MPI ``lmp`` then starts as
  two separate 1-rank runs, and the real ``test.sh`` (the melt on 2 ranks) must fail;
* ``pi-mpi``: the shipped definition-file example, its ``From:`` renamed to this
  catalogue's base;
* two ``kind: gpu`` images whose ``nvcc`` is a shell script standing in for CUDA's (about
  3 GB, too much for the suite): one "compiles", the other fails as nvcc does on bad code;
  both on a bare Debian 12 image, quick to convert.

One run, because SIF conversion is most of each job's time and these share their base
cells.  Repositories are new on every run (nothing is "already published"); the builds
come from the engine's layer cache after the first time.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import uuid
from pathlib import Path

from tests.catalogues import init_repo, write
from tests.integration.lab import REPO, bring_up, run_pipeline

IMAGES = """\
images:
  - name: base
    kind: base
    recipe: images/base/debian
    axes: {os: [debian12], mpi: [mpich-4.0, ompi-4.1], arch: [amd64]}
  - name: lammps
    kind: app
    description: LAMMPS molecular dynamics (Debian package, Open MPI build)
    recipe: images/app/lammps
    base: base
    commands: [lmp]
    axes: {os: [debian12], arch: [amd64]}
    include: [{mpi: ompi-4.1, version: "2022"}]
    tag: "lammps-gnu-{version}"
  - name: lammps-broken
    kind: app
    recipe: images/app/lammps-broken
    base: base
    axes: {os: [debian12], arch: [amd64]}
    include: [{mpi: ompi-4.1, version: "2022"}]
    tag: "lammps-broken-{version}"
  - name: pi-mpi
    kind: app
    recipe: images/app/pi-mpi
    axes: {os: [debian12], arch: [amd64]}
    include: [{mpi: ompi-4.1, version: "1.0"}]
    tag: "pi-mpi-{version}"
  # The gpu images on the bare OS (no compilers, no MPI): small SIFs, quick to convert.
  - name: plain
    kind: base
    recipe: images/base/plain
    axes: {os: [debian12], mpi: [none], arch: [amd64]}
    tag: "plain"
  - name: cuda-fake
    kind: gpu
    recipe: images/gpu/fake-nvcc
    base: plain
    axes: {os: [debian12], mpi: [none], arch: [amd64]}
    tag: "cuda-fake"
  - name: cuda-broken
    kind: gpu
    recipe: images/gpu/broken-nvcc
    base: plain
    axes: {os: [debian12], mpi: [none], arch: [amd64]}
    tag: "cuda-broken"
"""


def catalogue(base: str, app: str) -> str:
    return f"""\
repositories: {{base: {base}, gpu: {base}, app: {app}}}
targets: {{local: {{registry: "127.0.0.1:5000"}}}}
axes:
  os:
    default: debian12
    values:
      debian12:
        bootstrap: {{suite: bookworm, mirror: "http://deb.debian.org/debian"}}
        defaults: {{gcc: "12"}}
  gcc: {{values: ["12"]}}
  mpi:
    default: none
    prefix: ""
    values:
      none: {{tag: "", family: none, version: ""}}
      ompi-4.1: {{family: openmpi, version: "4.1"}}
      mpich-4.0: {{family: mpich, version: "4.0"}}
  arch: {{default: amd64, values: [amd64]}}
""" + IMAGES


# The real LAMMPS recipe plus one step: MPICH beside the base's Open MPI, and its launcher
# made `mpirun`.  lmp stays linked against Open MPI.
BREAK_MPI = """
# Broken on purpose (tests/integration/test_app_images.py): another MPI's mpirun.
RUN set -eux; apt-get update; apt-get install -y --no-install-recommends mpich; \\
    update-alternatives --set mpirun /usr/bin/mpirun.mpich; rm -rf /var/lib/apt/lists/*
"""

# A stand-in for nvcc: checks it was given a CUDA source and -o, then writes a program that
# prints what the smoke program's kernel computes on a GPU.
FAKE_NVCC = textwrap.dedent("""\
    #!/bin/sh
    set -eu
    out=""; src=""
    while [ $# -gt 0 ]; do
      case "$1" in -o) out=$2; shift ;; *.cu) src=$1 ;; esac
      shift
    done
    grep -q "__global__" "$src"
    printf '#!/bin/sh\\necho "cuda result 1 4 9 16"\\n' > "$out"
    chmod +x "$out"
    """)
BROKEN_NVCC = ("#!/bin/sh\necho 'square.cu(3): error: identifier \"cudaMalloc\" is undefined' "
               ">&2\nexit 2\n")
FILES = {
    "images/gpu/fake-nvcc/Dockerfile": (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY nvcc /usr/local/bin/nvcc\n"),
    "images/gpu/fake-nvcc/nvcc": FAKE_NVCC,
    "images/gpu/broken-nvcc/Dockerfile": (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY nvcc /usr/local/bin/nvcc\n"),
    "images/gpu/broken-nvcc/nvcc": BROKEN_NVCC,
    "images/base/plain/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
}


def run_apps(root: Path) -> dict:
    """Run the pipeline (main mode) on the catalogue above in ``root``; what tests read."""
    settings = bring_up()
    node = json.loads((settings.lab_dir / "node-image.json").read_text())
    space = f"factorytest-{uuid.uuid4().hex[:8]}"
    base, app = f"{space}/base", f"{space}/app"
    for recipe in ("images/base/debian", "images/app/pi-mpi", "images/app/lammps"):
        shutil.copytree(REPO / recipe, root / recipe)
    shutil.copytree(REPO / "images/app/lammps", root / "images/app/lammps-broken")
    dockerfile = root / "images/app/lammps-broken/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + BREAK_MPI)
    recipe = root / "images/app/pi-mpi/recipe.def"
    recipe.write_text(recipe.read_text().replace("sjtuhpc/hpc-base-container:", f"{base}:"))
    matrix = write(root, catalogue(base, app), FILES)
    for folder in ("fake-nvcc", "broken-nvcc"):
        (root / "images/gpu" / folder / "nvcc").chmod(0o755)
    (root / ".gitignore").write_text("out/\n")
    init_repo(root)
    code, jobs = run_pipeline(matrix, root / "out", "--mode", "main", "-j", "2")
    summary = json.loads((root / "out/summary.json").read_text())
    ids = {"mpich": f"{base}:mpich-4.0@amd64", "ompi": f"{base}:ompi-4.1@amd64",
           "plain": f"{base}:plain@amd64", "fake": f"{base}:cuda-fake@amd64",
           "broken-nvcc": f"{base}:cuda-broken@amd64",
           "lammps": f"{app}:lammps-broken-2022@amd64", "pi": f"{app}:pi-mpi-1.0@amd64",
           "lammps-real": f"{app}:lammps-gnu-2022@amd64"}
    return {"code": code, "jobs": {k: jobs[v] for k, v in ids.items()}, "summary": summary,
            "node": node, "app": app, "base": base, "settings": settings, "root": root,
            "matrix": matrix}
