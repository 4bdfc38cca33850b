"""Helpers for the tests that use the real lab (Docker engine, registry, QEMU)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pipeline.cli import main
from pipeline.lab import commands as lab_commands
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"


def lab_settings() -> Settings:
    return Settings.from_env(REPO)


def bring_up() -> Settings:
    """Bring the lab up (idempotent); fail loudly when it cannot be, never skip."""
    settings = lab_settings()
    code = lab_commands.up(settings)
    assert code == 0, "the lab could not be brought up; see the output above"
    return settings


def run_pipeline(matrix: Path, out: Path, *extra: str) -> tuple[int, dict]:
    """``python -m pipeline run`` in-process; returns the exit code and summary.json by id."""
    code = main(["run", "--matrix", str(matrix), "--out", str(out), *extra])
    summary = json.loads((out / "summary.json").read_text())
    return code, {job["id"]: job for job in summary["jobs"]}


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def image_config(reference: str) -> dict:
    docker("pull", "-q", reference)
    return json.loads(docker("image", "inspect", reference))[0]
