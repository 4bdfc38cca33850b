"""A fresh CI runner rebuilding an unchanged recipe with the registry cache, versus cold.

Cold: one base cell (``images/base/debian``, amd64: apt installs GCC and Open MPI) built
by a docker-container builder made for this bench (BuildKit's local cache empty), into a
repository of its own (so its registry cache in staging is empty too, and no image of it
is on this host).  Fresh runner: a second builder made the same way (nothing local), the
first run's image removed from the engine, and the recipe folder touched outside the
image (a new build_id, the same cache key), so the cell is built again, with only the
registry cache that the cold build exported to warm it.  Both are the whole ``python -m
pipeline run --stages build`` command; the ratio is of the build stage's own durations
(summary.json), the command's wall time is printed too.  The OS base comes from staging
both times, as it does on a runner.  Needs the lab (``python -m pipeline lab up``).
Target: fresh/cold <= 0.25.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_build import CATALOGUE, REPO
from pipeline.settings import Settings
from pipeline.tools import buildkit_image, buildx
from pipeline.tools.docker_engine import find_build_client


def timed_run(root: Path, out: Path, builder: str) -> tuple[float, dict]:
    env = {**{k: v for k, v in os.environ.items() if k != "PIPELINE_BUILD_CACHE"},
           "PIPELINE_BUILDX_BUILDER": builder}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--matrix",
                           str(root / "matrix.yaml"), "--out", str(out), "--stages", "build"],
                          cwd=REPO, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"the run failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    [job] = json.loads((out / "summary.json").read_text())["jobs"]
    return elapsed, job


def main() -> None:
    settings = Settings.from_env(REPO)
    client = find_build_client(settings)
    image = settings.buildkit_image or buildkit_image.ensure(settings.lab_dir, client, print)
    repository = f"factorybench-{uuid.uuid4().hex[:8]}"
    builders = [f"{repository}-cold", f"{repository}-fresh"]
    images: list[str] = []
    with tempfile.TemporaryDirectory(dir=settings.lab_dir) as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "images/base/debian", root / "images/base/debian")
        (root / "matrix.yaml").write_text(CATALOGUE.replace("factorybench/", f"{repository}/"))
        config = root / "buildkitd.toml"
        config.write_text(buildx.buildkitd_config([settings.registry, settings.pr_registry]))
        try:
            buildx.create(client, builders[0], image, config, lambda line: None)
            cold_wall, cold = timed_run(root, root / "out-cold", builders[0])
            images.append(cold["stages"]["build"]["image"])
            # The runner that comes next: its own BuildKit, nothing local, not the image.
            buildx.remove(client, builders[0])
            subprocess.run([client.path, "image", "rm", images[0]], capture_output=True,
                           check=False)
            buildx.create(client, builders[1], image, config, lambda line: None)
            (root / "images/base/debian/.bench").write_text(uuid.uuid4().hex)
            fresh_wall, fresh = timed_run(root, root / "out-fresh", builders[1])
            images.append(fresh["stages"]["build"]["image"])
            log = Path(fresh["log"]).read_text()
        finally:
            for name in builders:
                buildx.remove(client, name)
            for ref in images:
                subprocess.run([client.path, "image", "rm", ref], capture_output=True,
                               check=False)
    imported = "importing cache manifest from" in log
    cached = len(re.findall(r"^#\d+ CACHED$", log, re.MULTILINE))
    cold_s, fresh_s = cold["stages"]["build"]["duration"], fresh["stages"]["build"]["duration"]
    print(f"BuildKit image {image}; registry cache {'imported' if imported else 'NOT imported'}"
          f", {cached} step(s) CACHED on the fresh runner")
    print(f"cold build of one base cell (build stage): {cold_s:.1f} s "
          f"(whole command {cold_wall:.1f} s)")
    print(f"fresh-runner rebuild, warm registry cache (build stage): {fresh_s:.1f} s "
          f"(whole command {fresh_wall:.1f} s)")
    print(f"fresh-runner rebuild / cold build: {fresh_s / cold_s:.3f}")


if __name__ == "__main__":
    main()
