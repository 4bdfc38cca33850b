"""mpi-hybrid: whether the host's MPI can launch the container's, and which host MPI it is."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.planning.jobs import Job
from pipeline.stages.checks import mpi_hybrid
from pipeline.stages.mpi_compat import (
    HostMpi,
    HostMpiMissing,
    compatible,
    detect_host_mpi,
    find_mpirun,
    parse_version_output,
)
from pipeline.tools.apptainer import Apptainer

OPEN_MPI_4 = """mpirun (Open MPI) 4.1.4

Report bugs to http://www.open-mpi.org/community/help/
"""
OPEN_MPI_5 = """mpirun (Open MPI) 5.0.3

Report bugs to https://www.open-mpi.org/community/help/
"""
HYDRA = """HYDRA build details:
    Version:                                 4.0.2
    Release Date:                            Thu Apr  7 12:34:45 CDT 2022
    CC:                              gcc  -Wdate-time -D_FORTIFY_SOURCE=2 -g -O2
    Configure options:                       '--disable-option-checking' '--prefix=/usr'
    Process Manager:                         pmi
    Launchers available:                     ssh rsh fork slurm ll lsf sge manual persist
    Topology libraries available:            hwloc
    Resource management kernels available:   user slurm ll lsf sge pbs cobalt
    Demux engines available:                 poll select
"""
INTEL = """Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619 (id: c2e19c2f3e)
Copyright 2003-2023, Intel Corporation.
"""

CASES = [
    # container family, version, host family, version, soname -> compatible, reason
    ("openmpi", "4.1", "openmpi", "5.0", None, False,
     "host Open MPI 5.0 cannot launch the container's Open MPI 4.1: different major version"),
    ("openmpi", "5.0", "openmpi", "4.1.4", None, False,
     "host Open MPI 4.1.4 cannot launch the container's Open MPI 5.0: different major version"),
    ("openmpi", "4.1", "openmpi", "4.1.4", None, True,
     "host Open MPI 4.1.4 launches the container's Open MPI 4.1 (same major version)"),
    ("openmpi", "4.1", "openmpi", "4.0.3", None, True,
     "host Open MPI 4.0.3 launches the container's Open MPI 4.1 (same major version)"),
    ("mpich", "4.2", "mpich", "4.0", None, False,
     "host MPICH 4.0 is older than the container's MPICH 4.2"),
    ("mpich", "4.0", "mpich", "4.0.2", None, True,
     "host MPICH 4.0.2 launches the container's MPICH 4.0 (MPICH ABI, not older)"),
    ("mpich", "4.0", "mpich", "4.2.1", "libmpi.so.12", True,
     "host MPICH 4.2.1 launches the container's MPICH 4.0 (MPICH ABI, not older)"),
    ("mpich", "4.0", "intelmpi", "2021.10", "libmpi.so.12", True,
     "host Intel MPI 2021.10 launches the container's MPICH 4.0 through the MPICH ABI "
     "(libmpi.so.12; versions of different vendors are not compared)"),
    ("mpich", "4.0", "intelmpi", "2021.10", None, False,
     "cannot tell whether host Intel MPI 2021.10 provides libmpi.so.12 (the MPICH ABI), "
     "which the container's MPICH 4.0 needs"),
    ("mpich", "4.0", "mpich", "4.1", "libmpi.so.40", False,
     "host MPICH 4.1 provides libmpi.so.40, not libmpi.so.12 (the MPICH ABI) that the "
     "container's MPICH 4.0 uses"),
    ("openmpi", "4.1", "mpich", "4.0.2", None, False,
     "host MPICH 4.0.2 cannot launch the container's Open MPI 4.1: different MPI families"),
    ("mpich", "4.0", "openmpi", "4.1.4", None, False,
     "host Open MPI 4.1.4 cannot launch the container's MPICH 4.0: different MPI families"),
    ("openmpi", "4.1", "openmpi", None, None, False,
     "the host Open MPI's version is unknown, so not whether it can launch the container's "
     "Open MPI 4.1"),
    ("mpich", "4.2", "mpich", "", None, False,
     "the host MPICH's version is unknown, so not whether it can launch the container's "
     "MPICH 4.2"),
    ("openmpi", "4.1", None, None, None, False,
     "cannot tell which MPI the host's mpirun is ('?'), so not whether it can launch the "
     "container's Open MPI 4.1"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case[0]}{case[1]}-{case[2]}{case[3]}")
def test_compatibility_table(case):
    *given, ok, reason = case
    assert compatible(*given) == (ok, reason)


@pytest.mark.parametrize(("output", "expected"), [
    (OPEN_MPI_4, ("openmpi", "4.1.4")),
    (OPEN_MPI_5, ("openmpi", "5.0.3")),
    (HYDRA, ("mpich", "4.0.2")),
    (INTEL, ("intelmpi", "2021.10")),
    ("mpirun: unrecognized option '--version'\n", (None, None)),
    ("", (None, None)),
])
def test_version_output_is_parsed(output, expected):
    assert parse_version_output(output) == expected


LIBRARY = "FAKE MPI 1.0 of the container"


def fake_mpirun(folder: Path, output: str, ranks: int = 0, library: str = LIBRARY) -> Path:
    """An executable that prints ``output`` for --version, else hello lines for ``ranks``,
    each naming ``library`` as the MPI library the rank loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mpirun"
    hello = "".join(f"echo 'hello from rank {r} of {ranks} on node; library: {library}'\n"
                    for r in range(ranks))
    path.write_text(f"#!/bin/sh\nif [ \"$1\" = --version ]; then\ncat <<'EOF'\n{output}EOF\n"
                    f"exit 0\nfi\n{hello}")
    path.chmod(0o755)
    return path


def test_pipeline_host_mpi_wins_over_path(tmp_path):
    given = fake_mpirun(tmp_path / "given", OPEN_MPI_4)
    assert find_mpirun({"PIPELINE_HOST_MPI": str(given)}, lambda _: "/usr/bin/mpirun") == \
        str(given)
    assert find_mpirun({}, lambda _: "/usr/bin/mpirun") == "/usr/bin/mpirun"


def test_missing_or_bad_host_mpirun_says_why(tmp_path):
    with pytest.raises(HostMpiMissing, match="the host has no mpirun"):
        find_mpirun({}, lambda _: None)
    with pytest.raises(HostMpiMissing, match=r"PIPELINE_HOST_MPI=.*/nope is not an executable"):
        find_mpirun({"PIPELINE_HOST_MPI": str(tmp_path / "nope")}, lambda _: None)


def test_detect_runs_version_of_the_given_mpirun(tmp_path):
    given = fake_mpirun(tmp_path / "hydra" / "bin", HYDRA)
    (tmp_path / "hydra" / "lib").mkdir()
    (tmp_path / "hydra" / "lib" / "libmpi.so.12.2.0").write_text("")
    host = detect_host_mpi({"PIPELINE_HOST_MPI": str(given)})
    assert host == HostMpi(str(given), "mpich", "4.0.2", "libmpi.so.12")
    assert host.describe() == f"MPICH 4.0.2 ({given})"


def base_job(mpi: str, family: str, version: str) -> Job:
    return Job(id=f"r/base:{mpi}@amd64", image="base", kind="base", repository="r/base",
               tag=mpi, arch="amd64", recipe="images/base", needs=(), build_id="b" * 64,
               variables={"mpi": mpi, "mpi_family": family, "mpi_version": version})


def hybrid(tmp_path: Path, job: Job, monkeypatch, mpirun: Path | None):
    """Run the mpi-hybrid test with a fake host Apptainer: its exec succeeds, and the hello
    world run alone (a singleton) reports LIBRARY."""
    apptainer = tmp_path / "apptainer"
    apptainer.write_text("#!/bin/sh\nfor last; do :; done\ncase \"$last\" in */hello) "
                         f"echo 'hello from rank 0 of 1 on node; library: {LIBRARY}' ;; esac\n")
    apptainer.chmod(0o755)
    if mpirun is None:
        monkeypatch.delenv("PIPELINE_HOST_MPI", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    else:
        monkeypatch.setenv("PIPELINE_HOST_MPI", str(mpirun))
    ctx = SimpleNamespace(apptainer=Apptainer("host", str(apptainer), None, None, "1.3"))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    lines: list[str] = []
    return mpi_hybrid.check(job, tmp_path / "x.sif", ctx, work, lines.append)


def test_hybrid_is_skipped_when_the_host_cannot_launch_the_container(tmp_path, monkeypatch):
    mpirun = fake_mpirun(tmp_path / "ompi5", OPEN_MPI_5, ranks=4)
    result = hybrid(tmp_path, base_job("ompi-4.1", "openmpi", "4.1"), monkeypatch, mpirun)
    assert (result.result, result.reason) == (
        "skipped", "host Open MPI 5.0.3 cannot launch the container's Open MPI 4.1: "
        "different major version")


def test_hybrid_records_which_host_mpi_it_ran_with(tmp_path, monkeypatch):
    mpirun = fake_mpirun(tmp_path / "ompi4", OPEN_MPI_4, ranks=4)
    result = hybrid(tmp_path, base_job("ompi-4.1", "openmpi", "4.1"), monkeypatch, mpirun)
    assert (result.result, result.reason) == (
        "passed", f"host Open MPI 4.1.4 ({mpirun}), 4 ranks, each with the container's MPI "
        f"library ({LIBRARY})")


def test_hybrid_fails_when_a_rank_loaded_another_library(tmp_path, monkeypatch):
    # The host's mpirun "worked", but its ranks ran the host's library (e.g. the site bound
    # its own libmpi into the container): not the container's MPI being tested.
    mpirun = fake_mpirun(tmp_path / "ompi4", OPEN_MPI_4, ranks=4, library="Open MPI v4.1.4 host")
    result = hybrid(tmp_path, base_job("ompi-4.1", "openmpi", "4.1"), monkeypatch, mpirun)
    assert result.result == "failed"
    assert "not every rank loaded the container's MPI library" in result.reason


def test_hybrid_keeps_the_no_mpirun_reason(tmp_path, monkeypatch):
    result = hybrid(tmp_path, base_job("ompi-4.1", "openmpi", "4.1"), monkeypatch, None)
    assert (result.result, result.reason) == ("skipped", "the host has no mpirun")
    assert os.environ.get("PIPELINE_HOST_MPI") is None
