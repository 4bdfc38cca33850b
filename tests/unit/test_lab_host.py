"""The lab's host-side logic that needs no Docker: engine choice, services, settings, mirrors."""

from __future__ import annotations

import io
import socket
import sys
import urllib.request

import pytest

from pipeline.errors import InputError
from pipeline.lab import commands as lab_commands
from pipeline.lab import engine, host, services
from pipeline.settings import Settings, parse_mirrors
from pipeline.tools.registry.references import mirrored

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_engine_version_and_suite_choice(monkeypatch, tmp_path):
    assert engine.engine_major("Docker version 20.10.24+dfsg1, build 297e128") == 20
    assert engine.engine_major("26.1.5+dfsg1") == 26
    release = tmp_path / "os-release"
    release.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n')
    assert engine.codename(release) == "bookworm"
    monkeypatch.setattr(engine, "codename", lambda: "bookworm")
    monkeypatch.setattr(engine, "installed_major", lambda: 20)
    assert engine.newer_suite() == "trixie"
    monkeypatch.setattr(engine, "installed_major", lambda: None)  # fresh machine
    assert engine.newer_suite() == "trixie"
    monkeypatch.setattr(engine, "installed_major", lambda: 26)
    assert engine.newer_suite() is None
    monkeypatch.setattr(engine, "installed_major", lambda: 20)
    monkeypatch.setattr(engine, "codename", lambda: "noble")  # no known newer suite: left alone
    assert engine.newer_suite() is None


def test_the_engine_comes_from_the_host_s_own_mirror(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example.org/debian\nSuites: bookworm\n")
    assert engine.host_mirror(tmp_path) == "http://mirror.example.org/debian"
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://ftp.example.net/debian bookworm main\n")
    assert engine.host_mirror(tmp_path) == "http://ftp.example.net/debian"


def test_host_without_apt_gets_instructions_and_exit_2(monkeypatch, tmp_path):
    monkeypatch.setattr(host, "missing", lambda: [host.NEEDS[2]])
    monkeypatch.setattr(host, "can_apt", lambda: False)
    out = io.StringIO()
    settings = Settings.from_env(tmp_path, {})
    assert lab_commands.up(settings, out) == 2
    assert "install them yourself (Debian/Ubuntu names: docker-registry)" in out.getvalue()
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    except OSError:
        return False


def test_services_are_started_detached_and_stopped_by_their_pid(tmp_path):
    port = _free_port()
    service = services.Service("web", (sys.executable, "-m", "http.server", str(port),
                                      "--bind", "127.0.0.1"), ready=lambda: _answers(port),
                              timeout=20)
    pid = services.start(service, tmp_path / "run", tmp_path / "logs")
    assert services.running_pid(tmp_path / "run", "web") == pid
    assert _answers(port)
    assert services.stop(tmp_path / "run", "web") is True
    assert not _answers(port)
    assert services.stop(tmp_path / "run", "web") is False  # nothing of ours is left to stop


def test_a_service_that_dies_at_once_is_reported_with_its_log(tmp_path):
    service = services.Service("bad", (sys.executable, "-c", "import sys; sys.exit(4)"),
                              ready=lambda: False, timeout=10)
    with pytest.raises(RuntimeError, match=r"bad exited with code 4; see .*bad.log"):
        services.start(service, tmp_path / "run", tmp_path / "logs")


def test_registry_address_comes_from_the_environment():
    assert Settings.from_env(REPO, {}).registry == "127.0.0.1:5000"
    assert Settings.from_env(
        REPO, {"PIPELINE_REGISTRY": "127.0.0.2:5001"}).registry == "127.0.0.2:5001"
    with pytest.raises(InputError, match="PIPELINE_BUILDER"):
        Settings.from_env(REPO, {"PIPELINE_BUILDER": "kaniko"})


def test_mirror_mapping():
    mirrors = parse_mirrors("docker.io=mirror.site:5000, quay.io=q.site")
    assert (mirrored("docker.io/library/rockylinux:8", mirrors)
            == "mirror.site:5000/library/rockylinux:8")
    assert mirrored("quay.io/rockylinux/rockylinux:8", mirrors) == "q.site/rockylinux/rockylinux:8"
    assert mirrored("ghcr.io/x/y:1", mirrors) == "ghcr.io/x/y:1"
    with pytest.raises(InputError, match="is not REGISTRY=MIRROR"):
        parse_mirrors("docker.io")
