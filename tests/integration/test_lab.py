"""The lab's own behaviour: status, idempotent up, pid-tracked services, hosts without apt."""

from __future__ import annotations

import io
import subprocess
import tarfile

from pipeline.lab import commands as lab_commands
from tests.integration.lab import DOCKER, bring_up, docker


def test_up_is_idempotent_and_status_reports_everything():
    settings = bring_up()
    out = io.StringIO()
    assert lab_commands.up(settings, out) == 0
    text = out.getvalue()
    assert "docker daemon: running" in text or "docker daemon: started" in text
    assert f"registry {settings.registry} (trusted): answering, login required" in text
    assert f"registry {settings.pr_registry} (pr): answering, login required" in text
    out = io.StringIO()
    assert lab_commands.status(settings, out) == 0
    table = out.getvalue()
    for component in ("docker daemon", "builder", "registry (trusted)", "registry (pr)",
                      "qemu arm64", "mmdebstrap"):
        assert component in table
    assert "apptainer version 1." in table  # up: the runtime answers with its version


def test_the_lab_engine_saves_images_as_an_oci_layout(tmp_path):
    """What makes docker-daemon conversion skip recompressing layers (pipeline/lab/engine.py)."""
    bring_up()
    rootfs = tmp_path / "rootfs.tar"
    (tmp_path / "hello").write_text("hello\n")
    with tarfile.open(rootfs, "w") as tar:
        tar.add(tmp_path / "hello", arcname="hello")
    docker("import", str(rootfs), "factory-test/oci-save:1")
    try:
        saved = subprocess.run([DOCKER, "save", "factory-test/oci-save:1"], capture_output=True,
                               check=True).stdout
        (tmp_path / "saved.tar").write_bytes(saved)
        with tarfile.open(tmp_path / "saved.tar") as tar:
            names = set(tar.getnames())
    finally:
        docker("rmi", "factory-test/oci-save:1", check=False)
    assert {"oci-layout", "index.json"} <= names, sorted(names)
