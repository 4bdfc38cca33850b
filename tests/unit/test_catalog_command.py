"""``python -m pipeline catalog``: matrix.yaml's repositories read from the target, written
to ``out/site/`` and pushed; the same registry gives the same bytes.

Against the in-process registry of ``test_catalog_reading`` (Docker Hub's token flow, tag
pages), holding what the real publish stage pushed.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import pytest

from pipeline.errors import InputError
from pipeline.published import command
from pipeline.published.artifact import pull_catalog
from pipeline.published.catalog import catalog_problems
from pipeline.tools.credentials import Masker
from tests.catalogues import BASIC, write
from tests.fakes.docker_hub import FakeDockerHub
from tests.unit.test_catalog_reading import STAGING, About, client, job, publish

PASSWORD = "pw-catalog-secret"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with FakeDockerHub(users={"robot": PASSWORD}, writable=("t", STAGING)) as hub:
        registry = client(hub.address, PASSWORD)
        sifs = tmp_path_factory.mktemp("sifs")
        base = [job("t/base", "ompi-4.1", arch, "base", "base") for arch in ("amd64", "arm64")]
        publish(registry, sifs, base, About("Debian with an MPI"))
        yield hub


@pytest.fixture()
def matrix(tmp_path, hub, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("PIPELINE_OUT_DIR", "PIPELINE_SIGNING_PUBLIC_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIPELINE_REGISTRY_USERNAME", "robot")
    monkeypatch.setenv("PIPELINE_REGISTRY_PASSWORD", PASSWORD)
    text = BASIC.replace('targets: {local: {registry: "127.0.0.1:5000"}}',
                         f'targets: {{local: {{registry: "127.0.0.1:5000"}}, '
                         f'hub: {{registry: "{hub.address}"}}}}')
    return write(tmp_path / "catalogue", text)


def catalog(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["catalog", *argv])
    return args.func(args, Masker.from_env(), None)


def test_the_site_is_written_from_the_registry_and_pushed(matrix, hub, tmp_path, capsys):
    assert catalog("--matrix", str(matrix), "--target", "hub", "--push") == 0
    site = tmp_path / "out" / "site"
    body = (site / "catalog.json").read_bytes()
    data = json.loads(body)
    assert catalog_problems(data) == []
    assert data["target"] == {"name": "hub", "registry": hub.address}
    assert data["repositories"] == ["t/app", "t/base"]
    assert [(i["repository"], i["tag"]) for i in data["images"]] == [("t/base", "ompi-4.1")]
    assert (site / "catalog.json.sha256").read_text() == (
        f"{hashlib.sha256(body).hexdigest()}  catalog.json\n")
    assert (site / "index.html").is_file()
    assert (site / "registry" / "t" / "base" / "container.yaml").is_file()
    assert pull_catalog(client(hub.address, PASSWORD), f"{hub.address}/t/catalog:latest") == body
    out = capsys.readouterr().out
    assert f"pushed {hub.address}/t/catalog:latest" in out and PASSWORD not in out
    # Nothing changed: the same bytes, and the push finds it there.
    assert catalog("--matrix", str(matrix), "--target", "hub", "--push",
                   "--out", str(tmp_path / "again")) == 0
    assert (tmp_path / "again" / "catalog.json").read_bytes() == body
    assert f"unchanged {hub.address}/t/catalog:latest" in capsys.readouterr().out


def test_a_refused_login_is_one_plain_line_and_exit_1(matrix, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_REGISTRY_PASSWORD", "wrong-password")
    assert catalog("--matrix", str(matrix), "--target", "hub") == 1
    err = capsys.readouterr().err
    assert err.startswith("catalog: ") and "wrong-password" not in err
    assert len(err.strip().splitlines()) == 1


def test_repositories_in_two_namespaces_are_bad_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = BASIC.replace("app: t/app}", "app: other/app}")
    matrix = write(tmp_path / "catalogue", text)
    with pytest.raises(InputError, match="one namespace; these are in other, t"):
        catalog("--matrix", str(matrix))
