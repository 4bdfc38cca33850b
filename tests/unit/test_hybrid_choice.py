"""mpi-hybrid on the lab's cluster node: which of the node's MPIs launches a cell's MPI, what
the node's recorded facts mean, how the hello world is compiled, and the rank verdict."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.lab.node_image import LIBRARIES_LINE, MPIRUN_LINE, parse_facts
from pipeline.stages.checks import mpi, mpi_hybrid, results
from pipeline.stages.mpi_compat import (
    NODE,
    HostMpi,
    HostMpiMissing,
    choose,
    host_mpi_from,
    host_mpis,
)
from pipeline.tools.apptainer import Apptainer, Node, NodeMpi

# What the node's FACTS_SCRIPT printed on Debian sid (abridged): MPICH 5.0.2's hydra and
# Open MPI 6.0.0rc2, both from /usr, so both see every libmpi*.so.* there.
LIBRARIES = "libmpi.so.12\nlibmpi.so.40\nlibmpi.so.40.50.0\nlibmpich.so.12\nlibmpich.so.12.6.2\n"
FACTS = (f"{MPIRUN_LINE}/usr/bin/mpirun.mpich\nHYDRA build details:\n"
         "    Version:                                 5.0.2\n"
         "    Release Date:                            Fri Sep 25 20:45:26 UTC 2026\n"
         f"{LIBRARIES_LINE}\n{LIBRARIES}"
         f"{MPIRUN_LINE}/usr/bin/mpirun.openmpi\nmpirun.openmpi (Open MPI) 6.0.0rc2\n\n"
         "Report bugs to https://www.open-mpi.org/community/help/\n"
         f"{LIBRARIES_LINE}\n{LIBRARIES}")

MPICH5 = HostMpi("/usr/bin/mpirun.mpich", "mpich", "5.0.2", "libmpi.so.12", NODE)
OMPI6 = HostMpi("/usr/bin/mpirun.openmpi", "openmpi", "6.0.0rc2", None, NODE)
OMPI4 = HostMpi("/opt/ompi4/bin/mpirun", "openmpi", "4.1.6")
OMPI5 = HostMpi("/opt/ompi5/bin/mpirun", "openmpi", "5.0.8")
MPICH40 = HostMpi("/opt/mpich/bin/mpirun", "mpich", "4.0.2", "libmpi.so.12")
INTEL = HostMpi("/opt/intel/bin/mpirun", "intelmpi", "2021.10", "libmpi.so.12")


def node_runtime(*mpis: NodeMpi) -> Apptainer:
    return Apptainer("container", "apptainer", "factory/apptainer:x", "docker", "1.4",
                     node=Node("factory/node:x", mpis))


def test_facts_recorded_at_lab_up_are_read_back_per_mpirun():
    mpis = parse_facts(FACTS)
    assert [m.mpirun for m in mpis] == ["/usr/bin/mpirun.mpich", "/usr/bin/mpirun.openmpi"]
    assert "libmpich.so.12" in mpis[0].libraries
    hosts = [host_mpi_from(m.mpirun, m.version_output, m.libraries, NODE) for m in mpis]
    assert hosts == [MPICH5, OMPI6]
    assert MPICH5.describe() == "MPICH 5.0.2 (/usr/bin/mpirun.mpich on the lab's node)"


def test_node_facts_survive_the_marker_round_trip():
    node = Node("factory/node:x", parse_facts(FACTS))
    assert Node.from_json(node.to_json()) == node


@pytest.mark.parametrize(("family", "version", "hosts", "chosen", "reason"), [
    ("mpich", "4.0", [OMPI6, MPICH5], MPICH5,
     "host MPICH 5.0.2 launches the container's MPICH 4.0 (MPICH ABI, not older)"),
    # None of the node's Open MPIs fits: only they are named, not its MPICH.
    ("openmpi", "4.1", [MPICH5, OMPI6], None,
     "host Open MPI 6.0.0rc2 cannot launch the container's Open MPI 4.1: different major "
     "version"),
    ("openmpi", "5.0", [OMPI4, MPICH5, OMPI5], OMPI5,
     "host Open MPI 5.0.8 launches the container's Open MPI 5.0 (same major version)"),
    ("openmpi", "5.0", [OMPI4, OMPI6], None,
     "host Open MPI 4.1.6 cannot launch the container's Open MPI 5.0: different major "
     "version; host Open MPI 6.0.0rc2 cannot launch the container's Open MPI 5.0: different "
     "major version"),
    ("mpich", "4.2", [OMPI4, MPICH40], None,
     "host MPICH 4.0.2 is older than the container's MPICH 4.2"),
    # Both launch it; the container's own vendor is preferred, whatever the order.
    ("mpich", "4.0", [INTEL, MPICH40], MPICH40,
     "host MPICH 4.0.2 launches the container's MPICH 4.0 (MPICH ABI, not older)"),
    # No host MPI of its family at all: then the others say why not.
    ("mpich", "4.0", [OMPI4], None,
     "host Open MPI 4.1.6 cannot launch the container's MPICH 4.0: different MPI families"),
    ("mpich", "4.0", [], None, "no host MPI to try"),
])
def test_choose_picks_the_compatible_host_mpi(family, version, hosts, chosen, reason):
    assert choose(family, version, hosts) == (chosen, reason)


def test_host_mpis_of_the_node_and_pipeline_host_mpi():
    runtime = node_runtime(*parse_facts(FACTS))
    assert host_mpis(runtime, {}) == [MPICH5, OMPI6]
    assert host_mpis(runtime, {"PIPELINE_HOST_MPI": "/usr/bin/mpirun.openmpi"}) == [OMPI6]
    # A path the node does not have (e.g. the host's own mpirun) is refused, not tried.
    with pytest.raises(HostMpiMissing, match=r"PIPELINE_HOST_MPI=/usr/local/bin/mpirun is "
                       r"not an mpirun of the lab's node \(it has /usr/bin/mpirun.mpich, "
                       r"/usr/bin/mpirun.openmpi\)"):
        host_mpis(runtime, {"PIPELINE_HOST_MPI": "/usr/local/bin/mpirun"})


def test_host_mpis_without_a_node_or_with_no_mpi_say_why():
    bare = Apptainer("container", "apptainer", "factory/apptainer:x", "docker", "1.4")
    with pytest.raises(HostMpiMissing, match="no cluster node image"):
        host_mpis(bare, {})
    with pytest.raises(HostMpiMissing, match="has no mpirun"):
        host_mpis(node_runtime(), {})


def test_node_argv_runs_mpirun_unprivileged_in_the_node_image(tmp_path):
    runtime = node_runtime()
    argv = runtime.node_argv(["/usr/bin/mpirun.mpich", "-np", "4", "apptainer", "exec",
                              "x.sif", "hello"], [tmp_path], (Path("/sifs"),))
    assert argv[:3] == ["docker", "run", "--rm"]
    assert argv[argv.index("factory/node:x") + 1:argv.index("factory/node:x") + 2] == ["sh"]
    assert f"{tmp_path}:{tmp_path}" in argv and "/sifs:/sifs:ro" in argv
    assert argv[-8:] == ["apptainer", "/usr/bin/mpirun.mpich", "-np", "4", "apptainer", "exec",
                         "x.sif", "hello"]
    assert "factory/apptainer:x" not in argv  # the node, not the bare runtime


def line(rank: int, library: str, ranks: int = 4) -> str:
    return f"hello from rank {rank} of {ranks} on node; library: {library}\n"


@pytest.mark.parametrize(("stdout", "code", "result", "words"), [
    ("".join(line(r, "MPICH Version: 4.0.2") for r in range(4)), 0, "passed",
     "4 ranks, each with the container's MPI library (MPICH Version: 4.0.2)"),
    # Every rank answered, but one ran the host's library: not the container's MPI.
    ("".join(line(r, "MPICH Version: 5.0.2" if r == 2 else "MPICH Version: 4.0.2")
             for r in range(4)), 0, "failed", "{2: ['MPICH Version: 5.0.2']}"),
    # A rank twice and one missing, and a rank that answered twice with two libraries.
    ("".join(line(r, "MPICH Version: 4.0.2") for r in (0, 1, 1, 3)), 0, "failed",
     "ranks seen [0, 1, 1, 3]"),
    ("".join(line(r, "MPICH Version: 4.0.2") for r in range(4)), 1, "failed", "exit 1"),
    # Four singletons (each rank 0 of 1: the PMI wire-up failed) are not four ranks.
    ("".join(line(0, "MPICH Version: 4.0.2", 1) for _ in range(4)), 0, "failed",
     "ranks seen []"),
])
def test_hybrid_verdict(stdout, code, result, words):
    verdict = mpi_hybrid.verdict("host MPICH 5.0.2", code, stdout, "", "MPICH Version: 4.0.2")
    assert verdict.result == result
    assert words in verdict.reason


def fake_apptainer(tmp_path: Path, script: str) -> SimpleNamespace:
    """A context whose host Apptainer runs ``script`` (sh) with the real command's args."""
    path = tmp_path / "apptainer"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return SimpleNamespace(apptainer=Apptainer("host", str(path), None, None, "1.3"))


# exec's arguments: exec --bind WORK --bind SIFS:SIFS:ro SIF sh -c SCRIPT -> $6 is the SIF.
NO_MPICC_IN_APP = 'case "$6" in */app.sif) exit 99 ;; esac; echo "compiled in $6"\n'


def compile_in_work(tmp_path: Path, script: str, compile_in: Path | None):
    work = tmp_path / "work"
    work.mkdir(parents=True)
    lines: list[str] = []
    got = mpi.compile_hello("mpi", tmp_path / "app.sif", fake_apptainer(tmp_path, script),
                            work, lines.append, compile_in)
    return got, lines


def test_hello_is_compiled_in_the_base_sif_when_the_image_has_no_mpicc(tmp_path):
    got, lines = compile_in_work(tmp_path, NO_MPICC_IN_APP, tmp_path / "base.sif")
    assert got == tmp_path / "work" / "hello"
    assert f"compiled in {tmp_path / 'base.sif'}" in lines
    assert "mpi: compiled with the mpicc of base.sif (this image has none)" in lines


def test_no_mpicc_anywhere_skips_and_says_why(tmp_path):
    got, _ = compile_in_work(tmp_path, "exit 99\n", tmp_path / "base.sif")
    assert got == results.TestResult("mpi", "skipped", "no mpicc in app.sif or base.sif to compile "
                             "the MPI hello world")
    got, _ = compile_in_work(tmp_path / "alone", "exit 99\n", None)
    assert got == results.TestResult(
        "mpi", "skipped", "no mpicc in app.sif to compile the MPI hello world, and no base "
        "SIF with this MPI was given to compile in")


def test_a_failing_mpicc_fails_and_is_not_retried_elsewhere(tmp_path):
    got, lines = compile_in_work(tmp_path, 'echo "mpi_hello.c:1: error: boom"; exit 1\n',
                                 tmp_path / "base.sif")
    assert got.result == "failed" and "error: boom" in got.reason
    assert not any("base.sif" in line for line in lines)


@pytest.mark.parametrize(("command", "version", "flags"), [
    ("apptainer", "apptainer version 1.4.5", ["--sharens"]),
    ("/usr/bin/apptainer", "apptainer version 1.1.0", ["--sharens"]),
    ("apptainer", "apptainer version 1.0.3", []),  # before --sharens existed
    ("singularity", "singularity-ce version 4.1.0", []),  # SingularityCE has no --sharens
])
def test_ranks_share_one_user_namespace_where_the_runtime_can(command, version, flags):
    runtime = Apptainer("host", command, None, None, version)
    assert mpi_hybrid.share_namespace(runtime) == flags
