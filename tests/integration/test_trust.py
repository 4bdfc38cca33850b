"""A pull request plays the attacker; the following main run must not be fooled.

1. A pr-mode recipe whose ``RUN`` step (with the host's network, as every build has)
   tries to write to trusted staging, to the publish target and to pr staging.  Every
   write must be refused (401): the registries want a login the build never gets.
2. Someone who got the trusted registry's password plants an image in trusted staging,
   under the exact tag and with the exact labels a main run looks for.  The main run
   must neither reuse it nor publish it: it has no attestation signed with the key.
3. The main run publishes what it built itself, from the unmodified recipe.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from pipeline.names import BUILD_ID, FACTORY
from pipeline.planning.already_published import effective_build_ids
from pipeline.planning.planner import plan_with_catalogue
from pipeline.tools.registry.client import Registry
from pipeline.tools.registry.staging import staging_for
from pipeline.tools.upstream import Upstream
from tests.catalogues import init_repo, lab_catalogue, write
from tests.integration.lab import DOCKER, bring_up, docker, run_command

IMAGES = """\
images:
  - name: victim
    kind: base
    recipe: images/base/victim
    axes: {os: [debian12], arch: [amd64]}
    tag: victim
"""

HONEST = ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
          "COPY .test-run /etc/factory-test-run\n")

# Bash's /dev/tcp: a build step needs no tools to speak HTTP to the host's registries.
ATTACK = r"""
SHELL ["/bin/bash", "-c"]
RUN for target in $TARGETS; do host=${target%:*}; port=${target#*:}; \
      for path in /v2/$NS/base/blobs/uploads/ /v2/factory-staging/$NS/base/blobs/uploads/ \
                  /v2/factory-staging-pr/$NS/base/blobs/uploads/; do \
        if ! exec 3<>/dev/tcp/$host/$port; then \
          echo "ATTACK $target$path unreachable"; continue; fi; \
        printf 'POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' \
          "$path" "$target" >&3; \
        read -r status <&3; echo "ATTACK $target$path $status"; exec 3>&-; \
      done; \
    done
"""


def pipeline_run(root: Path, out: Path, *extra: str) -> tuple[int, dict, str]:
    """(exit code, the summary's jobs by id, output) of a run in a process of its own."""
    code, summary, output = run_command(root / "matrix.yaml", out, *extra)
    return code, {j["id"]: j for j in summary["jobs"]}, output


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    settings = bring_up()
    root = tmp_path_factory.mktemp("trust")
    ns = f"factorytest-{uuid.uuid4().hex[:8]}"
    files = {"images/base/victim/Dockerfile": HONEST,
             "images/base/victim/.test-run": uuid.uuid4().hex}
    write(root, lab_catalogue(f"{ns}/base", f"{ns}/app", IMAGES), files)
    (root / ".gitignore").write_text("out/\n")
    init_repo(root)
    job_id = f"{ns}/base:victim@amd64"

    # 1. The pull request: the same image, with a hostile build step.
    targets = f"{settings.registry} {settings.pr_registry}"
    (root / "images/base/victim/Dockerfile").write_text(
        HONEST + f"ARG TARGETS='{targets}'\nARG NS={ns}\n" + ATTACK)
    code, pr_jobs, pr_output = pipeline_run(root, root / "out-pr", "--mode", "pr", "--stages",
                                            "build")
    assert code == 0, pr_output
    attack_log = Path(pr_jobs[job_id]["log"]).read_text()

    # Back to the reviewed recipe, as main has it.
    (root / "images/base/victim/Dockerfile").write_text(HONEST)

    # 2. A stolen password: plant an image with the labels main will look for.
    planned = plan_with_catalogue(root / "matrix.yaml", "main")
    ids, unknown = effective_build_ids(planned.jobs, Upstream(settings))
    assert not unknown, unknown
    build_id = ids[job_id]
    staging = staging_for("main", settings.lab_dir, settings.registry, settings.pr_registry)
    planted_ref = staging.reference(f"{ns}/base", f"{build_id[:32]}-amd64")
    forged = root / "forged"
    forged.mkdir()
    (forged / "Dockerfile").write_text(
        "FROM scratch\nCOPY marker /planted-by-the-attacker\n"
        f'LABEL "{BUILD_ID}"="{build_id}" "{FACTORY}.id"="{job_id}"\n')
    (forged / "marker").write_text("owned\n")
    config = root / "docker-config"
    config.mkdir()
    subprocess.run([DOCKER, "--config", str(config), "login", "-u",
                    staging.credentials.username, "--password-stdin", staging.registry],
                   input=staging.credentials.password, text=True, check=True,
                   capture_output=True)
    subprocess.run([DOCKER, "build", "-q", "-t", planted_ref, str(forged)], check=True,
                   capture_output=True, env={"DOCKER_BUILDKIT": "1", "PATH": "/usr/bin:/bin"})
    subprocess.run([DOCKER, "--config", str(config), "push", planted_ref], check=True,
                   capture_output=True)
    trusted = staging.client()
    planted = trusted.digest(f"factory-staging/{ns}/base", f"{build_id[:32]}-amd64")
    assert planted
    # ... and an OS base under the tag main will look for, labelled as the factory labels
    # them (the root filesystem's sha256, from the lab's cache, as the pr run made it).
    base_tag = pr_jobs[job_id]["stages"]["build"]["base"].split("/factory-pr/os:")[1]
    base_tag = base_tag.split("@")[0]
    digests = [p.read_text().strip().removeprefix("sha256:")
               for p in (settings.lab_dir / "cache" / "rootfs").glob("debian12-amd64-*.digest")]
    content = next(d for d in digests if d.startswith(base_tag.rsplit("-", 1)[1]))
    os_ref = f"{staging.registry}/factory/os:{base_tag}"
    (forged / "Dockerfile").write_text(
        "FROM scratch\nCOPY marker /planted-by-the-attacker\n"
        f'LABEL "{BUILD_ID}"="{content}" "{FACTORY}.id"="os/debian12@amd64"\n')
    subprocess.run([DOCKER, "build", "-q", "-t", os_ref, str(forged)], check=True,
                   capture_output=True, env={"DOCKER_BUILDKIT": "1", "PATH": "/usr/bin:/bin"})
    subprocess.run([DOCKER, "--config", str(config), "push", os_ref], check=True,
                   capture_output=True)
    planted_os = trusted.digest("factory/os", base_tag)

    # 3. The main run.
    code, main_jobs, main_output = pipeline_run(root, root / "out-main", "--mode", "main")
    return {"ns": ns, "job_id": job_id, "attack_log": attack_log, "planted": planted,
            "planted_os": planted_os,
            "code": code, "main": main_jobs[job_id], "main_output": main_output,
            "settings": settings, "trusted": trusted}


def test_a_build_step_cannot_write_to_any_registry(attacked):
    lines = re.findall(r"ATTACK (127\.\S+) (HTTP/1\.1 \d+|unreachable)", attacked["attack_log"])
    assert len(lines) == 6, attacked["attack_log"][-3000:]  # 2 registries x 3 repositories
    assert {status for _, status in lines} == {"HTTP/1.1 401"}, lines


def test_main_neither_reuses_nor_publishes_the_planted_image(attacked):
    assert attacked["code"] == 0, attacked["main_output"]
    main = attacked["main"]
    assert main["result"] == "passed"
    assert main["stages"]["build"]["cached"] is False  # rebuilt, not "already built"
    assert main["image_digest"] != attacked["planted"]
    log = Path(main["log"]).read_text()
    assert "not reused" in log and "no attestation" in log
    published = attacked["trusted"].manifest(f"{attacked['ns']}/base", "victim")
    assert published is not None
    index = json.loads(published[0])
    digests = {m["digest"] for m in index["manifests"]}
    assert digests == {main["image_digest"]}


def test_main_does_not_build_on_a_planted_os_base(attacked):
    main = attacked["main"]
    log = Path(main["log"]).read_text()
    assert "os base debian12/amd64: not reused" in log and "no attestation" in log
    assert not main["stages"]["build"]["base"].endswith(attacked["planted_os"])


def test_anonymous_clients_can_neither_read_nor_write_the_lab_registries(attacked):
    settings = attacked["settings"]
    for address in (settings.registry, settings.pr_registry):
        with pytest.raises(Exception, match="401"):
            Registry(address).tags(f"{attacked['ns']}/base")


def test_pr_staging_is_not_readable_with_trusted_credentials(attacked):
    settings = attacked["settings"]
    pr = staging_for("pr", settings.lab_dir, settings.registry, settings.pr_registry)
    trusted = staging_for("main", settings.lab_dir, settings.registry, settings.pr_registry)
    assert pr.registry != trusted.registry
    assert pr.credentials.password != trusted.credentials.password
    with pytest.raises(Exception, match="401"):
        Registry(pr.registry, trusted.credentials).tags(f"factory-staging-pr/{attacked['ns']}/base")
    assert docker("ps", "-q") is not None  # the daemon is still ours
