"""Helpers for the tests that use the real lab (Docker engine, registries, QEMU).

The lab's registries want a login.  The tests read back what runs left there as an
operator would: with the lab's trusted login (``trusted()``), and with the docker CLI in a
config folder of their own (``docker()``), never in the user's ``~/.docker``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.cli import main
from pipeline.lab import commands as lab_commands
from pipeline.settings import Settings
from pipeline.tools.registry.client import Credentials, Registry
from pipeline.tools.registry.staging import credentials_file, read_credentials

REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"


def lab_settings() -> Settings:
    return Settings.from_env(REPO)


def docker_config() -> Path:
    return lab_settings().lab_dir / "run" / "docker-tests"


def bring_up() -> Settings:
    """Bring the lab up (idempotent); fail loudly when it cannot be, never skip."""
    settings = lab_settings()
    code = lab_commands.up(settings)
    assert code == 0, "the lab could not be brought up; see the output above"
    folder = docker_config()
    folder.mkdir(parents=True, exist_ok=True)
    for trusted_one, address in ((True, settings.registry), (False, settings.pr_registry)):
        login = read_credentials(credentials_file(settings.lab_dir, trusted_one))
        subprocess.run([DOCKER, "--config", str(folder), "login", "-u", login.username,
                        "--password-stdin", address], input=login.password, text=True,
                       check=True, capture_output=True)
    return settings


def trusted_login() -> Credentials:
    return read_credentials(credentials_file(lab_settings().lab_dir, True))


def trusted() -> Registry:
    """The lab's trusted registry (staging of main runs, the local target), logged in."""
    return Registry(lab_settings().registry, trusted_login())


def run_pipeline(matrix: Path, out: Path, *extra: str) -> tuple[int, dict]:
    """``python -m pipeline run`` in-process; returns the exit code and summary.json by id."""
    code = main(["run", "--matrix", str(matrix), "--out", str(out), *extra])
    summary = json.loads((out / "summary.json").read_text())
    return code, {job["id"]: job for job in summary["jobs"]}


def run_command(matrix: Path, out: Path, *extra: str,
                env: dict | None = None) -> tuple[int, dict, str]:
    """``python -m pipeline run`` in a process of its own, as a user runs it; (exit code,
    summary.json, output).  ``env`` replaces the environment when given."""
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--matrix", str(matrix),
                           "--out", str(out), *extra], cwd=REPO, capture_output=True,
                          text=True, env=env, check=False)
    summary = json.loads((out / "summary.json").read_text())
    return done.returncode, summary, done.stdout + done.stderr


def docker(*args: str, check: bool = True) -> str:
    """The docker CLI, logged in to the lab's registries."""
    done = subprocess.run([DOCKER, "--config", str(docker_config()), *args],
                          capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def image_config(reference: str) -> dict:
    docker("pull", "-q", reference)
    return json.loads(docker("image", "inspect", reference))[0]
