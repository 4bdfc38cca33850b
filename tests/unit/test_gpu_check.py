"""The gpu test: compiled with the image's nvcc everywhere, run only with a GPU and a host
Apptainer; a failing nvcc fails it.  Apptainer and nvidia-smi are stand-in scripts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.stages.checks import gpu
from pipeline.tools.apptainer import Apptainer


def script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def run_check(tmp_path: Path, monkeypatch, apptainer_body: str, *, smi: str | None,
              kind: str = "host"):
    """The gpu check with a fake apptainer; ``smi``: nvidia-smi's body, None for none."""
    bin_dir = tmp_path / "bin"
    if smi is not None:
        script(bin_dir, "nvidia-smi", smi)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    apptainer = script(tmp_path, "apptainer", apptainer_body)
    runtime = Apptainer(kind, str(apptainer), "img" if kind == "container" else None,
                        "docker" if kind == "container" else None, "1.3")
    if kind == "container":
        # The container runtime's command line is docker's; run the fake directly instead.
        runtime = SimpleNamespace(kind="container",
                                  argv=lambda args, binds, **_: [str(apptainer), *map(str, args)])
    work = tmp_path / "work"
    work.mkdir()
    lines: list[str] = []
    result = gpu.check(None, tmp_path / "cuda.sif", SimpleNamespace(apptainer=runtime), work,
                       lines.append)
    return result, lines


# The fake apptainer: `exec ... SIF nvcc` exits with NVCC_EXIT; `exec --nv` runs the program.
NVCC_OK = 'case "$*" in *" nvcc "*) exit 0 ;; *--nv*) echo "cuda result 1 4 9 16" ;; esac\n'
NVCC_FAILS = ('case "$*" in *" nvcc "*) echo "square.cu(3): error: identifier \\"cudaMalloc\\" '
              'is undefined" >&2; exit 2 ;; esac\n')


@pytest.mark.parametrize(("smi", "kind", "reason"), [
    (None, "host", "compiled; not run: no GPU (nvidia-smi missing or failing)"),
    ("exit 9\n", "host", "compiled; not run: no GPU (nvidia-smi missing or failing)"),
    ("exit 0\n", "container", "compiled; not run: no host Apptainer: --nv needs Apptainer "
     "on the host, next to the driver; the lab runs it in a container"),
    ("exit 0\n", "host", "compiled; nvidia-smi and the CUDA kernel ran"),
])
def test_compiled_everywhere_run_only_with_a_gpu_and_host_apptainer(tmp_path, monkeypatch,
                                                                     smi, kind, reason):
    result, lines = run_check(tmp_path, monkeypatch, NVCC_OK, smi=smi, kind=kind)
    assert (result.result, result.reason) == ("passed", reason)
    ran_nv = any("--nv" in line for line in lines)
    assert ran_nv == (reason == "compiled; nvidia-smi and the CUDA kernel ran")


@pytest.mark.parametrize("smi", [None, "exit 0\n"])
def test_failing_nvcc_fails_with_its_output_gpu_or_not(tmp_path, monkeypatch, smi):
    result, lines = run_check(tmp_path, monkeypatch, NVCC_FAILS, smi=smi)
    assert result.result == "failed"
    assert result.reason.startswith("nvcc could not compile the CUDA smoke program: exit 2")
    assert 'identifier "cudaMalloc" is undefined' in result.reason
    assert not any("--nv" in line for line in lines)  # nothing runs after a failed compile


def test_a_kernel_with_the_wrong_answer_fails(tmp_path, monkeypatch):
    wrong = 'case "$*" in *--nv*) echo "cuda result 1 2 3 4" ;; esac\n'
    result, _ = run_check(tmp_path, monkeypatch, wrong, smi="exit 0\n")
    assert result.result == "failed" and "cuda result 1 2 3 4" in result.reason
