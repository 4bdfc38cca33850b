"""Conversion of one base image to a SIF versus plain mksquashfs of the same root filesystem.

Conversion: the convert stage as ``python -m pipeline run --stages build,convert`` runs it
(the image already built), timed by the stage itself.  Plain: the image's root filesystem
exported with ``docker export`` (not timed), then ``mksquashfs -noappend -all-root`` timed
with the same mksquashfs, in the same runtime, on the same cores.  Prints both, their
ratio and the SIF's size, with the Docker engine's version and where the conversion worked
(see pipeline/lab/engine.py and pipeline/scratch.py for why both matter).  Needs the lab.
Target: ratio <= 1.5.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_build import CATALOGUE, REPO
from pipeline.settings import Settings
from pipeline.tools.apptainer import find
from pipeline.tools.docker_engine import daemon_version, find_build_client

DOCKER = "/usr/bin/docker"


def run(root: Path, out: Path, stages: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--matrix",
                           str(root / "matrix.yaml"), "--out", str(out), "--stages", stages],
                          cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"the run failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return json.loads((out / "summary.json").read_text())["jobs"][0]


def main() -> None:
    settings = Settings.from_env(REPO)
    apptainer = find(settings.lab_dir, find_build_client(settings))
    with tempfile.TemporaryDirectory(dir=settings.lab_dir) as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "images/base/debian", root / "images/base/debian")
        (root / "matrix.yaml").write_text(CATALOGUE)
        run(root, root / "out-build", "build")
        job = run(root, root / "out-convert", "build,convert")
        convert_s = job["stages"]["convert"]["duration"]
        scratch = next((line.split("scratch ", 1)[1] for line in
                        Path(job["log"]).read_text().splitlines() if "scratch " in line), "?")
        sif_size = Path(job["sif"]).stat().st_size

        rootfs = root / "rootfs"
        rootfs.mkdir()
        container = subprocess.run([DOCKER, "create", job["stages"]["build"]["image"], "true"],
                                   capture_output=True, text=True, check=True).stdout.strip()
        try:
            export = subprocess.Popen([DOCKER, "export", container], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-C", str(rootfs)], stdin=export.stdout, check=True)
            export.wait()
        finally:
            subprocess.run([DOCKER, "rm", container], capture_output=True, check=False)
        image = root / "plain.sqfs"
        argv = apptainer.argv(["--version"], [root])
        # The same runtime's mksquashfs: swap the apptainer command for mksquashfs.
        mksquashfs = ["mksquashfs", str(rootfs), str(image), "-noappend", "-all-root", "-quiet"]
        argv = [*argv[:-2], *mksquashfs] if apptainer.kind == "container" else mksquashfs
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        plain_s = time.perf_counter() - start
    print(f"docker engine {daemon_version()}; conversion scratch {scratch}")
    print(f"conversion of one base image (docker-daemon -> SIF): {convert_s:.1f} s")
    print(f"plain mksquashfs of the same root filesystem: {plain_s:.1f} s")
    print(f"ratio: {convert_s / plain_s:.2f}")
    print(f"SIF size: {sif_size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
