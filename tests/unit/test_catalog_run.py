"""A main/nightly run records what the catalogue needs with each tag, then refreshes it.

The run goes through the command line with the fake lab of ``test_exit_codes`` (stages and
the publish step replaced, nothing built or pushed); what is checked is what the publisher
hands the publish step (each arch's ``Record``) and what it does after the tags: the
catalogue refreshed and pushed, reported like a publication.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from pipeline.catalogue.model import Target
from pipeline.planning.jobs import Job
from pipeline.run import publishing
from pipeline.run.outcomes import Outcome
from pipeline.run.publishing import Publisher, publications_exit_code
from pipeline.stages.build import Built
from pipeline.tools.credentials import Secrets
from pipeline.tools.git import Source
from pipeline.tools.registry.client import Registry, RegistryError
from tests.unit import test_exit_codes
from tests.unit.test_exit_codes import fake_publish, fake_site, run, summary

EXIT_PASSED, EXIT_JOB_FAILED = 0, 1
lab = test_exit_codes.lab  # the fake lab, as a fixture of this module too


@pytest.fixture
def seen(monkeypatch) -> SimpleNamespace:
    """Records the publish step's arch states and the catalogue refreshes."""
    seen = SimpleNamespace(states={}, sites=[])

    def publish(repository, tag, states, ctx, log):
        seen.states.update({s.job_id: s for s in states})
        return fake_publish(repository, tag, states, ctx, log)

    def site(registry, scope, out, *, push, log):
        seen.sites.append(SimpleNamespace(host=registry.host, scope=scope, out=out, push=push))
        return fake_site(registry, scope, out, push=push, log=log)

    monkeypatch.setattr(publishing, "publish_tag", publish)
    monkeypatch.setattr(publishing, "make_site", site)
    return seen


def test_each_arch_is_published_with_its_tests_and_the_images_facts(lab, seen):
    assert run(lab, "--mode", "main") == EXIT_PASSED
    app = seen.states["t/app:app-2022@amd64"].record
    assert (app.name, app.kind, app.commands) == ("app", "app", ())
    assert app.tests == ({"name": "%test", "result": "passed", "reason": ""},)
    assert app.variables["version"] == "2022" and app.source == "file:///x"
    base = seen.states["t/base:ompi-4.1@arm64"].record
    assert (base.name, base.kind, base.commands) == ("base", "base", ("mpicc", "mpirun"))


def test_after_publishing_the_catalogue_is_refreshed_pushed_and_reported(lab, seen):
    assert run(lab, "--mode", "main") == EXIT_PASSED
    [site] = seen.sites
    assert (site.scope.repositories, site.push, site.out) == (
        ("t/app", "t/base"), True, lab.out / "site")
    assert site.scope.target.name == "local"
    data = summary(lab)
    catalog = [p for p in data["publications"] if p["repository"] == "t/catalog"]
    assert [(p["tag"], p["result"]) for p in catalog] == [("latest", "published")]
    assert catalog[0]["refs"] == [f"{site.host}/t/catalog:latest@sha256:" + "c" * 64]
    junit = ET.parse(lab.out / "junit.xml").getroot()
    assert junit.find("testsuite[@name='publications']/testcase[@name='t/catalog:latest']") \
        is not None


def test_a_catalogue_that_cannot_be_pushed_fails_the_run_plainly(lab, seen, monkeypatch):
    def refused(registry, scope, out, *, push, log):
        log("reading the registry")
        raise RegistryError("registry 127.0.0.1:5000: PUT manifest t/catalog:latest answered "
                            "HTTP 400: MANIFEST_INVALID")

    monkeypatch.setattr(publishing, "make_site", refused)
    assert run(lab, "--mode", "main") == EXIT_JOB_FAILED
    data = summary(lab)
    [catalog] = [p for p in data["publications"] if p["repository"] == "t/catalog"]
    assert catalog["result"] == "failed"
    assert catalog["reason"] == ("catalog: RegistryError: registry 127.0.0.1:5000: PUT "
                                 "manifest t/catalog:latest answered HTTP 400: MANIFEST_INVALID")
    assert "Traceback" in (lab.out / "logs" / "publish" / "catalog.log").read_text()
    assert publications_exit_code(data["publications"]) == EXIT_JOB_FAILED
    assert 'message="catalog: RegistryError' in (lab.out / "junit.xml").read_text()
    # the tags themselves were published: the registry is the truth, the catalogue says it
    assert {p["result"] for p in data["publications"] if p is not catalog} == {"published"}


def test_pr_mode_never_refreshes_the_catalogue(lab, seen):
    assert run(lab, "--mode", "pr") == EXIT_PASSED
    assert seen.sites == [] and summary(lab)["publications"] == []


def test_with_nothing_published_and_a_catalogue_there_it_is_left_alone(lab, seen,
                                                                        monkeypatch):
    def already(repository, tag, states, ctx, log):
        return {"result": "already published", "tags": [tag]}

    monkeypatch.setattr(publishing, "publish_tag", already)
    monkeypatch.setattr(Registry, "digest", lambda self, repository, ref: "sha256:" + "d" * 64)
    assert run(lab, "--mode", "main") == EXIT_PASSED
    assert seen.sites == []
    assert "t/catalog" not in {p["repository"] for p in summary(lab)["publications"]}


def test_the_run_s_catalogue_gives_the_commands_and_defaults_the_rest(tmp_path, seen):
    """``Run.catalogue`` (matrix.yaml as read): an image's ``commands:``, else its kind's."""
    image = SimpleNamespace(name="lammps", commands_of=lambda variables: ("lmp",))
    jobs = [Job(f"t/{name}:x@amd64", name, kind, f"t/{name}", "x", "amd64",
                {"mpi": "ompi-4.1", "mpi_family": "openmpi"}, "images/x", (), "b" * 64)
            for name, kind in (("lammps", "app"), ("cuda", "gpu"))]
    outcomes = {}
    for job in jobs:
        outcome = outcomes[job.id] = Outcome(job, tmp_path / "log", result="passed")
        outcome.stages = {"test": {"tests": [{"name": "%test", "result": "passed",
                                               "reason": "secret-value seen"}]}}
        staged = f"127.0.0.1:5000/factory-staging/{job.repository}"
        outcome.built = Built(f"{staged}:b-amd64", f"{staged}@sha256:" + "1" * 64,
                              "sha256:" + "1" * 64, "b" * 64, "t/base:x", "sha256:" + "2" * 64,
                              False)
        outcome.converted = SimpleNamespace(sif=tmp_path / "x.sif")
    secrets = Secrets.from_env({"PIPELINE_REGISTRY_USERNAME": "robot",
                                "PIPELINE_REGISTRY_PASSWORD": "secret-value"})
    run_ = SimpleNamespace(
        mode="main", declared=jobs, outcomes=outcomes, published_ids={}, publications=[],
        descriptions={"lammps": "LAMMPS"}, catalogue=SimpleNamespace(images=(image,)),
        settings=SimpleNamespace(registry="127.0.0.1:5000", lab_dir=tmp_path,
                                 out_dir=tmp_path / "out"),
        target=Target("local", "127.0.0.1:5000", None, None), secrets=secrets,
        masker=secrets.masker(), console=SimpleNamespace(log=lambda *a, **k: None))
    context = SimpleNamespace(apptainer=None, scratch=tmp_path, catalogue_dir=tmp_path,
                              source=Source("https://forge.test/f", "0" * 40), staging=None)
    publisher = Publisher(run_, context)
    publisher._refresh_catalog = lambda ctx, tags: None  # the refresh is the tests' above
    publisher.publish_all(outcomes)
    lammps, cuda = (seen.states[job.id].record for job in jobs)
    assert (lammps.commands, lammps.description) == (("lmp",), "LAMMPS")
    assert (lammps.base_name, lammps.base_digest) == ("t/base:x", "sha256:" + "2" * 64)
    assert lammps.tests[0]["reason"] == "*** seen"  # it goes to a registry: masked
    assert (cuda.commands, cuda.description) == (("nvcc", "mpicc", "mpirun"), "")
    json.dumps(lammps.descriptor_annotations())  # plain strings, for the registry
