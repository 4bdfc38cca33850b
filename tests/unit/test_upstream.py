"""``upstream:`` files: their content goes into the effective build_id, read once per run.

A local HTTP server serves a repository's ``repomd.xml`` (and a suite's ``InRelease``);
nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.catalogue.validation import load_catalogue
from pipeline.cli import main
from pipeline.planning import already_published, build_ids
from pipeline.planning.already_published import effective_build_ids
from pipeline.planning.jobs import Job
from pipeline.planning.recipe_files import WorkTree
from pipeline.settings import Settings
from pipeline.stages import build as build_stage
from pipeline.tools.upstream import Upstream, UpstreamUnknown
from tests.catalogues import BASIC, line_of, plan, write

REPO = Path(__file__).resolve().parents[2]
BAD_INPUT = 2  # the exit code


@dataclass(frozen=True)
class UpstreamJob(Job):
    """A planned job with its rendered ``upstream:`` URLs (``Job.upstream``)."""

    upstream: tuple = ()


class Server:
    """Serves ``folder`` on 127.0.0.1 and counts the requests per path."""

    def __init__(self, folder: Path):
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    folder = tmp_path / "www"
    (folder / "repo" / "repodata").mkdir(parents=True)
    (folder / "repo" / "repodata" / "repomd.xml").write_text("<repomd>1</repomd>\n")
    (folder / "dists" / "s").mkdir(parents=True)
    (folder / "dists" / "s" / "InRelease").write_text("Suite: s\n")
    server = Server(folder)
    yield server, folder
    server.close()


def jobs(mirror: str, urls: tuple) -> list[Job]:
    base = Job(id="r/base:b@amd64", image="base", kind="base", repository="r/base", tag="b",
               arch="amd64", variables={"os": "d", "os_source": "bootstrap", "os_suite": "s",
                                        "os_mirror": mirror, "arch": "amd64"},
               recipe="images/base", needs=(), build_id="1" * 64)
    gpu = UpstreamJob(id="r/base:cuda@amd64", image="cuda", kind="gpu", repository="r/base",
                      tag="cuda", arch="amd64", variables={"arch": "amd64"}, recipe="images/gpu",
                      needs=(base.id,), build_id="2" * 64, upstream=urls)
    return [base, gpu]


def run(tmp_path, plan_jobs, patience: float = 5.0) -> tuple[dict, dict]:
    """One run's effective build_ids: a new Upstream, as every run has."""
    return effective_build_ids(plan_jobs, Upstream(Settings.from_env(tmp_path, {}),
                                                   patience=patience))


def test_the_effective_build_id_changes_when_the_file_changes_and_only_then(tmp_path, served):
    server, folder = served
    plan_jobs = jobs(server.url, (f"{server.url}/repo/repodata/repomd.xml",))
    first, unknown = run(tmp_path, plan_jobs)
    assert unknown == {}
    again, _ = run(tmp_path, plan_jobs)
    assert again == first
    (folder / "repo" / "repodata" / "repomd.xml").write_text("<repomd>2</repomd>\n")
    moved, _ = run(tmp_path, plan_jobs)
    assert moved["r/base:b@amd64"] == first["r/base:b@amd64"]  # the OS did not move
    assert moved["r/base:cuda@amd64"] != first["r/base:cuda@amd64"]


def test_the_plan_build_id_does_not_depend_on_upstream(tmp_path, served):
    server, folder = served
    plan_jobs = jobs(server.url, (f"{server.url}/repo/repodata/repomd.xml",))
    before = [j.build_id for j in plan_jobs]
    (folder / "repo" / "repodata" / "repomd.xml").write_text("<repomd>3</repomd>\n")
    assert [j.build_id for j in jobs(server.url, plan_jobs[1].upstream)] == before


def test_a_job_without_upstream_files_keeps_its_effective_build_id(tmp_path, served):
    server, _ = served
    ids, _ = run(tmp_path, jobs(server.url, ()))
    base = ids["r/base:b@amd64"]
    # As before upstream files existed: sha256 of "plan id|what is below".
    assert ids["r/base:cuda@amd64"] == hashlib.sha256(f"{'2' * 64}|{base}".encode()).hexdigest()


def test_a_run_reads_each_url_once(tmp_path, served):
    server, folder = served
    url = f"{server.url}/repo/repodata/repomd.xml"
    upstream = Upstream(Settings.from_env(tmp_path, {}))
    first = upstream.file_identity(url)
    (folder / "repo" / "repodata" / "repomd.xml").write_text("<repomd>4</repomd>\n")
    assert upstream.file_identity(url) == first  # the run's answer does not change
    assert first.startswith(f"{url} sha256:")
    assert server.hits == {"/repo/repodata/repomd.xml": 1}
    # A suite's InRelease named as an upstream file and as the OS is read once, too.
    inrelease = f"{server.url}/dists/s/InRelease"
    upstream.identity({"os_source": "bootstrap", "os_mirror": server.url, "os_suite": "s"})
    upstream.file_identity(inrelease)
    assert server.hits["/dists/s/InRelease"] == 1


def test_an_unreachable_upstream_file_is_unknown_with_a_plain_message(tmp_path, served):
    server, _ = served
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/repodata/repomd.xml"
    upstream = Upstream(Settings.from_env(tmp_path, {}), patience=0)  # no retries: fast
    ids, unknown = effective_build_ids(jobs(server.url, (url,)), upstream)
    assert "r/base:b@amd64" in ids
    assert unknown == {"r/base:cuda@amd64": f"cannot read {url} (ConnectionError); is the "
                                            "mirror reachable from here?"}
    with pytest.raises(UpstreamUnknown, match="is the mirror reachable from here"):
        upstream.file_identity(url)  # asked once per run, failures included


def test_a_missing_upstream_file_says_where_to_fix_it(tmp_path, served):
    server, _ = served
    url = f"{server.url}/nope/repomd.xml"
    upstream = Upstream(Settings.from_env(tmp_path, {}))
    _, unknown = effective_build_ids(jobs(server.url, (url, url)), upstream)
    assert unknown["r/base:cuda@amd64"] == (f"{url} answered HTTP 404; check the image's "
                                            "upstream URLs in matrix.yaml")
    with pytest.raises(UpstreamUnknown):
        upstream.file_identity(url)
    assert server.hits["/nope/repomd.xml"] == 1  # failures are kept for the run, too


def test_the_plan_and_the_build_stage_use_one_function():
    assert build_stage.effective_build_id is build_ids.effective_build_id
    assert already_published.effective_build_id is build_ids.effective_build_id
    assert build_stage.upstream_identities is already_published.upstream_identities


# -- the catalogue ------------------------------------------------------------------------
def test_the_shipped_rocky_and_cuda_images_name_their_repositories():
    catalogue = load_catalogue(WorkTree(REPO), "matrix.yaml")
    shipped = plan(REPO / "matrix.yaml")
    cuda = shipped["sjtuhpc/hpc-base-container:gcc-11.cuda-11.8.ompi-4.1-rocky8@arm64"]
    nvidia = "https://developer.download.nvidia.com/compute/cuda/repos/rhel8"
    assert catalogue.image("cuda-rocky").upstream_urls(cuda.variables) == (
        f"{nvidia}/sbsa/repodata/repomd.xml",)
    rocky = shipped["sjtuhpc/hpc-base-container:ompi-4.1-rocky8@amd64"]
    assert catalogue.image("base-rocky").upstream_urls(rocky.variables) == (
        "https://dl.rockylinux.org/pub/rocky/8/BaseOS/x86_64/os/repodata/repomd.xml",
        "https://dl.rockylinux.org/pub/rocky/8/AppStream/x86_64/os/repodata/repomd.xml")
    debian = shipped["sjtuhpc/hpc-base-container:gcc-11.cuda-11.8.ompi-4.1@amd64"]
    assert catalogue.image("cuda-debian").upstream_urls(debian.variables) == (
        "http://deb.debian.org/debian/dists/bookworm/InRelease",)


def test_planning_fetches_nothing(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("the plan went to the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert main(["plan", "--matrix", str(REPO / "matrix.yaml"), "--format", "json"]) == 0
    assert '"image": "cuda-rocky"' in capsys.readouterr().out


def with_upstream(urls: str) -> str:
    return BASIC.replace("    recipe: images/app\n",
                         f"    recipe: images/app\n    upstream: {urls}\n")


def test_upstream_templates_with_every_cells_variables_plan(tmp_path):
    text = with_upstream('["{os_mirror}/dists/{os_suite}/InRelease", '
                         '"https://x.org/{arch}/{mpi}/repomd.xml"]')
    assert main(["plan", "--matrix", str(write(tmp_path, text))]) == 0


@pytest.mark.parametrize("urls,needle,message", [
    ('["https://x.org/{arch_rpm}/repomd.xml"]', "upstream", (
        "images[1].upstream[0]: unknown field {arch_rpm} in 'https://x.org/{arch_rpm}/repomd.xml'; "
        "use one of arch, arch_platform, cuda, gcc, mpi, os, os_mirror, os_source, os_suite "
        "(variables every cell of the image has)")),
    ('["ftp://x.org/repomd.xml"]', "upstream",
     "images[1].upstream[0]: 'ftp://x.org/repomd.xml' is not an http:// or https:// URL"),
    ('["https://x.org/{gcc:>3}"]', "upstream",
     "images[1].upstream[0]: {gcc} must be a plain field, without ':' or '!'"),
    ('["https://x.org/a b"]', "upstream", (
        "images[1].upstream[0]: 'https://x.org/a b' is not valid here: give a URL without "
        "spaces, e.g. https://dl.rockylinux.org/pub/rocky/8/BaseOS/{arch_rpm}/os/repodata/"
        "repomd.xml; {field}s are the cell's variables")),
    ('"https://x.org/repomd.xml"', "upstream", "images[1].upstream must be a list, not "
     "'https://x.org/repomd.xml'"),
])
def test_bad_upstream_templates_are_bad_input(tmp_path, capsys, urls, needle, message):
    text = with_upstream(urls)
    matrix = write(tmp_path, text)
    assert main(["plan", "--matrix", str(matrix)]) == BAD_INPUT
    err = capsys.readouterr().err.replace(str(matrix), "matrix.yaml").splitlines()
    assert err[:-1] == [f"matrix.yaml:{line_of(text, needle)}: {message}"]


def test_a_field_only_some_cells_have_is_refused(tmp_path, capsys):
    # ompi-4.1 has a family, none has not: not every cell of base could fill {mpi_family}.
    text = BASIC.replace("    recipe: images/base\n",
                         '    recipe: images/base\n    upstream: ["https://x.org/{mpi_family}"]\n')
    assert main(["plan", "--matrix", str(write(tmp_path, text))]) == BAD_INPUT
    assert "unknown field {mpi_family}" in capsys.readouterr().err
