"""The publish stage for real, through a registry that behaves like Docker Hub.

The production target is Docker Hub, which cannot be reached from here.  So the target of
these runs is ``FakeDockerHub`` (tests/fakes/docker_hub.py) in front of the lab's real
registry: it hands out pull-only tokens for reads, answers writes with
``insufficient_scope``, expires tokens after 3 s, fails every 7th token request with 503,
and lets anyone pull the test namespace anonymously, as a public Docker Hub repository.

One small base cell (amd64 and arm64) is run through every stage in ``main`` mode into a
namespace of its own; the tests read back what was published anonymously with skopeo,
``docker pull`` and ``apptainer pull oras://``, then publish again through a proxy that
injects faults, run nightly (nothing to do) and pr (asks the target nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from pipeline.stages.publish import (
    ArchState,
    PublishContext,
    PublishFailed,
    PublishRefused,
    publish_tag,
)
from pipeline.tools.apptainer import find
from pipeline.tools.credentials import Secrets
from pipeline.tools.digests import sha256_file
from pipeline.tools.docker_engine import find_build_client
from pipeline.tools.registry.client import Credentials, Registry
from pipeline.tools.registry.retries import RetryPolicy
from tests.catalogues import init_repo, lab_catalogue, write
from tests.fakes.docker_hub import FakeDockerHub
from tests.fakes.fake_library import FakeLibrary
from tests.fakes.faulty_proxy import FaultyProxy, blob_get, blob_put, manifest_put
from tests.integration.lab import bring_up, docker, run_command, trusted, trusted_login

IMAGES = """\
images:
  - name: plain
    kind: base
    recipe: images/base/plain
    axes: {os: [debian12], arch: [amd64, arm64]}
    tag: plain
"""


def catalogue(namespace: str, hub: str, library: str) -> str:
    """The lab's catalogue header, with the fake Docker Hub as the default target."""
    targets = (f'targets:\n  local: {{registry: "127.0.0.1:5000"}}\n  hub:\n    registry: "{hub}"\n'
               f'    library: {{endpoint: "{library}", collection: factorytest/lib}}\n'
               "default_target: hub\n")
    return lab_catalogue(f"{namespace}/base", f"{namespace}/app", IMAGES, targets)

FILES = {
    "images/base/plain/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
                                    "COPY .test-run /etc/factory-test-run\n",
    "images/base/plain/test.sh": "#!/bin/sh\ntest -s /etc/factory-test-run\n",
}
PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]
LIBRARY_TOKEN = "library-token-" + uuid.uuid4().hex


def run(root: Path, out: Path, *extra: str, env: dict | None = None) -> tuple[int, dict, str]:
    """``python -m pipeline run`` as a user runs it; (exit code, summary, output)."""
    return run_command(root / "matrix.yaml", out, *extra, env={**_env(), **(env or {})})


def _env() -> dict:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PIPELINE_LIBRARY", "PIPELINE_REGISTRY_"))}


HUB_LOGIN = {"PIPELINE_REGISTRY_USERNAME": "robot", "PIPELINE_REGISTRY_PASSWORD": PASSWORD}


def skopeo_raw(reference: str) -> dict:
    """Read anonymously, as a cluster pulling a public repository does."""
    done = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                           f"docker://{reference}"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    settings = bring_up()
    root = tmp_path_factory.mktemp("publish")
    namespace = f"factorytest-{uuid.uuid4().hex[:8]}"
    login = trusted_login()
    # Docker Hub and the Sylabs library are hosted services: stand-ins that follow their
    # protocols (tests/fakes/), driven by the real clients, in front of the real registry.
    hub = FakeDockerHub(settings.registry, users={"robot": PASSWORD}, public=(f"{namespace}/*",),
                        writable=(namespace,), token_lifetime=3.0, token_503_every=7,
                        upstream_login=(login.username, login.password))
    with hub, FakeLibrary(LIBRARY_TOKEN) as library:
        write(root, catalogue(namespace, hub.address, library.url),
              {**FILES, "images/base/plain/.test-run": uuid.uuid4().hex})
        (root / ".gitignore").write_text("out/\n")
        init_repo(root)
        code, summary, output = run(root, root / "out", "--mode", "main", "-j", "2",
                                    env={"PIPELINE_LIBRARY_TOKEN": LIBRARY_TOKEN, **HUB_LOGIN})
        assert code == 0, output
        # The read-backs below use docker, skopeo and apptainer, whose retries are not the
        # factory's business: from here on the token service stays up.
        hub.token_503_every = 0
        yield {"settings": settings, "root": root, "repo": f"{namespace}/base",
               "summary": summary, "jobs": {j["id"]: j for j in summary["jobs"]},
               "output": output, "library": library, "hub": hub}


def test_publishing_followed_docker_hub_s_token_rules(published):
    """What made the Docker Hub upload bug invisible with a fake that always said yes."""
    hub, repo = published["hub"], published["repo"]
    # Tokens live 3 s: the publish outlived them, so the same scopes were asked for again.
    granted = Counter(r.scopes for r in hub.token_requests if r.status == 200)
    assert max(granted.values()) >= 2, granted
    assert any(r.status == 503 for r in hub.token_requests)  # the token service failed
    asked = {scope for r in hub.token_requests for scope in r.scopes}
    assert f"repository:{repo}:pull,push" in asked
    assert f"repository:{repo}-sif:pull,push" in asked
    assert all(r.user == "robot" for r in hub.token_requests if r.authenticated)


def test_the_tag_is_one_list_of_both_arches_with_the_built_digests(published):
    repo, jobs, hub = published["repo"], published["jobs"], published["hub"]
    index = skopeo_raw(f"{hub.address}/{repo}:plain")
    by_arch = {m["platform"]["architecture"]: m for m in index["manifests"]}
    assert set(by_arch) == {"amd64", "arm64"}
    for arch in ("amd64", "arm64"):
        job = jobs[f"{repo}:plain@{arch}"]
        assert job["result"] == "passed"
        assert by_arch[arch]["digest"] == job["image_digest"]
        assert (by_arch[arch]["annotations"]["org.sjtuhpc.factory.build-id"]
                == job["stages"]["build"]["build_id"])
    publication, catalog = published["summary"]["publications"]
    assert publication["result"] == "published"
    assert publication["index"].endswith("@" + publication["index"].rsplit("@", 1)[1])
    # After the tag, the catalogue, refreshed from the target and pushed to it.
    assert (catalog["repository"], catalog["tag"], catalog["result"]) == (
        published["repo"].split("/")[0] + "/catalog", "latest", "published")


def test_docker_pull_gets_each_arch(published):
    repo, jobs, hub = published["repo"], published["jobs"], published["hub"]
    for arch in ("amd64", "arm64"):
        docker("pull", "-q", "--platform", f"linux/{arch}", f"{hub.address}/{repo}:plain")
        config = json.loads(docker("image", "inspect", f"{hub.address}/{repo}:plain"))[0]
        assert config["Architecture"] == arch
        assert (config["Config"]["Labels"]["org.sjtuhpc.factory.build-id"]
                == jobs[f"{repo}:plain@{arch}"]["stages"]["build"]["build_id"])


def test_the_immutable_tag_names_the_same_list(published):
    publication = published["summary"]["publications"][0]
    immutable, moving = publication["tags"]
    assert immutable.startswith("plain-") and moving == "plain"
    reg = trusted()
    assert (reg.manifest(published["repo"], immutable)[2]
            == reg.manifest(published["repo"], "plain")[2])


def test_a_sif_pulled_back_with_apptainer_is_the_one_built(published, tmp_path):
    settings = published["settings"]
    apptainer = find(settings.lab_dir, find_build_client(settings))
    job = published["jobs"][f"{published['repo']}:plain@arm64"]
    reference = job["stages"]["publish"]["sif"]
    assert reference == f"oras://{published['hub'].address}/{published['repo']}-sif:plain-arm64"
    pulled = tmp_path / "pulled.sif"
    tmp_path.chmod(0o777)  # the pull runs as an unprivileged user, as cluster users do
    apptainer.run(["pull", "--no-https", str(pulled), reference], [tmp_path], print,
                  unprivileged=True)
    assert sha256_file(pulled) == sha256_file(Path(job["sif"]))
    assert job["stages"]["publish"]["sif_sha256"] == sha256_file(pulled)


def test_each_arch_s_sif_is_in_the_library_and_the_token_is_in_no_log(published):
    library, repo = published["library"], published["repo"]
    stored = library.tagged_by_arch()
    for arch in ("amd64", "arm64"):
        job = published["jobs"][f"{repo}:plain@{arch}"]
        pushed = job["stages"]["publish"]["library"]
        assert pushed["result"] == "published"
        assert pushed["reference"] == "library://factorytest/lib/base:plain"
        image = stored[("factorytest/lib/base:plain", arch)]
        assert "sha256:" + hashlib.sha256(image.data).hexdigest() == sha256_file(Path(job["sif"]))
    out = published["root"] / "out"
    logs = "".join(p.read_text() for p in (out / "logs").rglob("*.log"))
    assert LIBRARY_TOKEN not in logs + published["output"] + (out / "summary.json").read_text()


def test_a_nightly_run_with_nothing_changed_builds_and_pushes_nothing(published, tmp_path):
    root, repo = published["root"], published["repo"]
    reg = trusted()
    before = reg.manifest(repo, "plain")[2]
    plan = subprocess.run(["python3", "-m", "pipeline", "plan", "--matrix",
                           str(root / "matrix.yaml"), "--mode", "nightly", "--format", "json"],
                          capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    for job in json.loads(plan.stdout)["jobs"]:
        assert job["action"] == "skip"
        assert job["reason"].startswith(f"already published as {published['hub'].address}/"
                                        f"{repo}:plain")
    code, summary, output = run(root, tmp_path / "out", "--mode", "nightly")
    assert code == 0, output
    assert all(j["result"] == "skipped" and not j["stages"] for j in summary["jobs"])
    assert summary["publications"] == []
    assert reg.manifest(repo, "plain")[2] == before


def test_a_main_rerun_of_a_published_revision_builds_nothing(published, tmp_path):
    root, repo = published["root"], published["repo"]
    code, summary, output = run(root, tmp_path / "out", "--mode", "main")
    assert code == 0, output
    assert {j["id"]: (j["result"], j["reason"].split(" (")[0]) for j in summary["jobs"]} == {
        f"{repo}:plain@{arch}": ("skipped",
                                 f"already published as {published['hub'].address}/{repo}:plain")
        for arch in ("amd64", "arm64")}
    assert summary["publications"] == []


def test_pr_mode_asks_the_target_nothing_even_with_credentials(published, tmp_path):
    root, hub = published["root"], published["hub"]
    (root / "images/base/plain/.test-run").write_text(uuid.uuid4().hex)  # a new build_id
    seen, tokens = len(hub.requests), len(hub.token_requests)
    code, summary, output = run(root, tmp_path / "out", "--mode", "pr", "--select",
                                "*@amd64", env=HUB_LOGIN)
    assert code == 0, output
    [job] = summary["jobs"]
    assert job["stages"]["build"]["cached"] is False  # it really built, then did not push
    assert job["stages"]["publish"] == {"result": "skipped", "reason": "pr mode never publishes"}
    # Not a request, not a token: the password was never even offered to the target.
    assert (len(hub.requests), len(hub.token_requests)) == (seen, tokens)
    assert job["stages"]["build"]["image"].startswith(
        f"{published['settings'].pr_registry}/factory-staging-pr/")
    logs = "".join(p.read_text() for p in (tmp_path / "out/logs").rglob("*.log"))
    assert PASSWORD not in logs + output + (tmp_path / "out/summary.json").read_text()


def _states(published) -> list[ArchState]:
    repo = published["repo"]
    states = []
    for arch in ("amd64", "arm64"):
        job = published["jobs"][f"{repo}:plain@{arch}"]
        build = job["stages"]["build"]
        states.append(ArchState(arch, job["id"], build["build_id"], job["image_digest"],
                                build["reference"].split("/", 1)[1].rsplit("@", 1)[0],
                                Path(job["sif"])))
    return states


def _context(published, registry: Registry, secrets: Secrets | None = None) -> PublishContext:
    settings = published["settings"]
    return PublishContext("faulty", trusted(), registry,
                          secrets or Secrets.from_env({}), None, None, None,
                          settings.lab_dir / "scratch", "test", "2026-01-01T00:00:00Z")





def test_publishing_through_faults_loses_and_corrupts_nothing(published, tmp_path):
    repo = published["repo"].replace("/base", "/through-proxy")
    schedule = [(blob_put, "503", 2), (blob_put, "drop", 1), (blob_get, "cut", 2),
                (manifest_put, "429", 2), (manifest_put, "503", 1),
                (lambda m, p: m == "HEAD", "drop", 2)]
    with FaultyProxy("127.0.0.1:5000", schedule) as proxy:
        target = Registry(proxy.address, trusted_login(),
                          policy=RetryPolicy(attempts=8, total_seconds=120))
        result = publish_tag(repo, "plain", _states(published), _context(published, target),
                             print)
    assert result["result"] == "published"
    assert {f[0] for f in proxy.faults} == {"503", "drop", "cut", "429"}
    assert all(rule[2] == 0 for rule in proxy.schedule)  # every scheduled fault happened
    direct = trusted()
    body, _, digest = direct.manifest(repo, "plain")
    assert result["index"].endswith(digest)
    for entry in json.loads(body)["manifests"]:
        manifest = json.loads(direct.manifest(repo, entry["digest"])[0])
        for blob in [manifest["config"], *manifest["layers"]]:
            direct.download_blob(repo, blob["digest"], tmp_path / "blob")  # checks the digest
    for state in _states(published):
        sif_body = direct.manifest(f"{repo}-sif", f"plain-{state.arch}")[0]
        layer = json.loads(sif_body)["layers"][0]
        assert layer["digest"] == sha256_file(state.sif)
        direct.download_blob(f"{repo}-sif", layer["digest"], tmp_path / "sif")


def test_a_publish_that_failed_half_way_resumes_without_uploading_again(published):
    repo = published["repo"].replace("/base", "/resumed")
    # The registry keeps failing once the images and SIFs are up, when the index is pushed.

    def index_put(method: str, path: str) -> bool:
        return method == "PUT" and f"/v2/{repo}/manifests/plain-" in path

    with FaultyProxy("127.0.0.1:5000", [(index_put, "503", 100)]) as proxy:
        target = Registry(proxy.address, trusted_login(),
                          policy=RetryPolicy(attempts=2, total_seconds=10))
        with pytest.raises(PublishFailed, match="503"):
            publish_tag(repo, "plain", _states(published), _context(published, target), print)
        first_uploads = [r for r in proxy.requests if r[0] == "POST" and "/blobs/uploads/" in r[1]]
    direct = trusted()
    assert first_uploads  # it had got as far as uploading
    assert direct.manifest(repo, "plain") is None  # the moving tag comes last: not there
    with FaultyProxy("127.0.0.1:5000", []) as proxy:
        result = publish_tag(repo, "plain", _states(published),
                             _context(published, Registry(proxy.address, trusted_login())),
                             print)
        uploads = [r for r in proxy.requests if r[0] in ("POST", "PATCH", "PUT")
                   and "/blobs/uploads/" in r[1]]
    assert result["result"] == "published"
    assert uploads == []  # every image layer and SIF was already there
    assert result["index"].endswith(direct.manifest(repo, "plain")[2])


def test_a_tag_with_a_failed_arch_is_refused_and_nothing_is_pushed(published):
    repo = published["repo"].replace("/base", "/refused")
    states = _states(published)
    states[1].missing = "failed (test: %test failed)"
    reg = trusted()
    with pytest.raises(PublishRefused, match="arm64 failed"):
        publish_tag(repo, "plain", states, _context(published, reg), print)
    assert reg.manifest(repo, "plain") is None
    assert not reg.has_blob(repo, states[0].digest)


def test_a_private_repository_needs_the_credentials(published):
    """Docker Hub's token flow, straight through publish_tag: a private namespace."""
    repo = published["repo"].replace("/base", "/hub")
    login = trusted_login()
    with FakeDockerHub(published["settings"].registry, users={"robot": PASSWORD},
                       writable=(repo.split("/")[0],), public=(), token_lifetime=1.0,
                       upstream_login=(login.username, login.password)) as hub:
        target = Registry(hub.address, Credentials("robot", PASSWORD))
        result = publish_tag(repo, "plain", _states(published), _context(published, target),
                             print)
        assert result["result"] == "published"
        with pytest.raises(PublishFailed, match="no credentials were given: set "
                           "PIPELINE_REGISTRY_USERNAME"):
            publish_tag(repo + "-anonymous", "plain", _states(published),
                        _context(published, Registry(hub.address)), print)
    assert trusted().manifest(repo, "plain")[2] == result["index"].split("@")[1]
    assert Registry("docker.io").base == "https://registry-1.docker.io"


def test_refused_credentials_are_named_not_retried_and_masked(published):
    repo = published["repo"].replace("/base", "/private")
    secrets = Secrets.from_env({"PIPELINE_REGISTRY_USERNAME": "robot",
                                "PIPELINE_REGISTRY_PASSWORD": PASSWORD})
    with FaultyProxy("127.0.0.1:5000", [], auth="Basic nobody-has-this") as proxy:
        target = Registry(proxy.address, Credentials("robot", PASSWORD))
        with pytest.raises(PublishFailed) as failure:
            publish_tag(repo, "plain", _states(published),
                        _context(published, target, secrets), print)
    message = str(failure.value)
    assert "PIPELINE_REGISTRY_USERNAME/PIPELINE_REGISTRY_PASSWORD" in message
    assert repo in message and "401" in message
    assert PASSWORD not in message
    assert len(proxy.requests) <= 3  # asked, answered the challenge once, gave up
