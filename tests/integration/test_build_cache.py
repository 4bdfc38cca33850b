"""BuildKit's registry cache for real: a fresh builder rebuilds a recipe from the cache that
an earlier build left in staging, as a fresh CI runner would.

The first run builds a small recipe (its RUN step unique to this test run) with the
factory's own builder.  The second run, after a change to the recipe folder that the RUN
step does not see (a new build_id, the same cache key), builds with a second
docker-container builder made for this test: a BuildKit with nothing local.  Its log must
show the cache imported from pr staging and the RUN step taken from it (not run: no
output of its command), and its RUN layer (random bytes) must be the first run's.  The
test's builder is removed at the end.
"""

from __future__ import annotations

import os
import re
import uuid

import pytest

from pipeline.tools import buildkit_image, buildx
from pipeline.tools.docker_engine import find_build_client
from pipeline.tools.registry.client import Registry
from pipeline.tools.registry.staging import credentials_file, read_credentials
from tests.catalogues import init_repo, lab_catalogue, write
from tests.integration.lab import bring_up, image_config, run_command, trusted

IMAGES = """\
images:
  - name: cached
    kind: base
    recipe: images/base/cached
    axes: {os: [debian12], arch: [amd64]}
    tag: cached
"""


@pytest.fixture
def fresh_builder(tmp_path):
    """A docker-container builder of its own (unique name, empty state), removed after."""
    settings = bring_up()
    client = find_build_client(settings)
    lines: list[str] = []
    image = settings.buildkit_image or buildkit_image.ensure(settings.lab_dir, client,
                                                             lines.append)
    name = f"factorytest-cache-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "buildkitd.toml"
    config.write_text(buildx.buildkitd_config([settings.registry, settings.pr_registry]))
    buildx.create(client, name, image, config, lines.append)
    try:
        yield settings, client, name
    finally:
        assert buildx.remove(client, name)


def env_with(**extra: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}, **extra}


def executed(log: str, nonce: str) -> bool:
    """Whether the RUN step ran in this build: its output line is in the log."""
    return re.search(rf"^#\d+ [0-9.]+ running the step {nonce}$", log, re.MULTILINE) is not None


def run_layer(reference: str) -> str:
    return image_config(reference)["RootFS"]["Layers"][-1]


def test_a_fresh_builder_rebuilds_from_the_registry_cache(tmp_path, fresh_builder):
    settings, client, name = fresh_builder
    namespace = f"factorytest-{uuid.uuid4().hex[:8]}"
    nonce = uuid.uuid4().hex
    write(tmp_path, lab_catalogue(f"{namespace}/base", f"{namespace}/app", IMAGES), {
        "images/base/cached/Dockerfile": (
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
            f"RUN echo 'running the step {nonce}' && echo {nonce} > /etc/factory-cache-test && "
            "od -An -N16 -tx1 /dev/urandom >> /etc/factory-cache-test && sleep 2\n")})
    (tmp_path / ".gitignore").write_text("out/\n")
    init_repo(tmp_path)

    code, first, output = run_command(tmp_path / "matrix.yaml", tmp_path / "out1", "--stages",
                                      "build", env=env_with())
    assert code == 0, output[-3000:]
    [job] = first["jobs"]
    ref = f"{settings.pr_registry}/factory-staging-pr/cache/{namespace}/base:cached-cached-amd64"
    first_log = open(job["log"]).read()
    assert f"build cache: {ref} (builder factory-builder" in first_log
    assert executed(first_log, nonce)  # the step ran: nothing of this test run was cached
    assert "writing cache image manifest" in first_log  # exported

    # The new builder has no local state at all: whatever it finds, it imports.
    usage = buildx.disk_usage(client, name)
    assert re.search(r"^Total:\s+0B$", usage, re.MULTILINE), f"not a fresh builder: {usage}"
    (tmp_path / "images/base/cached/notes.txt").write_text("not in the image\n")
    code, second, output = run_command(tmp_path / "matrix.yaml", tmp_path / "out2", "--stages",
                                       "build", env=env_with(PIPELINE_BUILDX_BUILDER=name))
    assert code == 0, output[-3000:]
    [again] = second["jobs"]
    assert again["reason"] == "built"  # a new build_id: built, not found in staging
    assert again["stages"]["build"]["build_id"] != job["stages"]["build"]["build_id"]
    log = open(again["log"]).read()
    assert f"(builder {name}, PIPELINE_BUILDX_BUILDER; pr staging)" in log
    assert f"importing cache manifest from {ref}" in log
    step = re.search(r"^#(\d+) \[\d+/\d+\] RUN echo 'running the step " + nonce, log,
                     re.MULTILINE)
    assert step, log[-3000:]
    # Taken from the cache, not run: BuildKit marks the step CACHED, or (``--load`` needs
    # the layers in the engine) shows only the cached layers' download under it.
    assert not executed(log, nonce), log[-3000:]
    assert re.search(rf"^#{step.group(1)} (CACHED|sha256:[0-9a-f]{{64}} .* done)$", log,
                     re.MULTILINE), log[-3000:]
    assert run_layer(again["stages"]["build"]["reference"]) == run_layer(
        job["stages"]["build"]["reference"])

    # A pr run's cache went to pr staging, never to the trusted registry.
    pr = Registry(settings.pr_registry,
                  read_credentials(credentials_file(settings.lab_dir, trusted=False)))
    assert pr.tags(f"factory-staging-pr/cache/{namespace}/base") == ["cached-cached-amd64"]
    assert trusted().tags(f"factory-staging/cache/{namespace}/base") == []
