"""The lab's one-node Slurm cluster, where no Docker is needed: its image key, its
configuration, how it is started, and what ``lab --with`` accepts.  Slurm itself runs in
tests/integration/test_slurm.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.lab import cluster_image, slurm
from pipeline.tools import apptainer

REPO = Path(__file__).resolve().parents[2]
# What Debian 13's Slurm 24.11 answers to `srun --mpi=list` in the cluster.
SRUN_MPI_LIST = """\
MPI plugin types are...
\tnone
\tpmix
\tcray_shasta
\tpmi2
specific pmix plugin versions available: pmix_v5
"""


def conf(text: str) -> dict:
    """slurm.conf's KEY=VALUE lines (the node and partition lines by their first word)."""
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {line.split("=", 1)[0]: line.split("=", 1)[1] for line in lines}


def test_the_image_key_changes_with_the_node_and_with_what_goes_on_top(monkeypatch):
    name = cluster_image.image_name("factory/node:aaa")
    assert name == cluster_image.image_name("factory/node:aaa")
    assert name.startswith("factory/cluster:") and len(name.split(":")[1]) == 12
    assert cluster_image.image_name("factory/node:bbb") != name
    monkeypatch.setattr(cluster_image, "SLURM_CONF", cluster_image.SLURM_CONF + "# more\n")
    assert cluster_image.image_name("factory/node:aaa") != name


def test_slurm_comes_from_trixie_for_its_pmix_plugin():
    """Sid's Slurm has no mpi_pmix: only the Slurm packages are pinned to trixie."""
    text = cluster_image.dockerfile("factory/node:aaa")
    assert text.startswith("FROM factory/node:aaa\n")
    for name in ("slurm-wlm", "slurmctld", "slurmd", "slurm-client", "slurm-wlm-basic-plugins"):
        assert f" {name}/trixie " in text
    assert " munge " in text and " lmod " in text


def test_one_node_of_four_cpus_without_cgroups_or_accounting():
    settings = conf(cluster_image.SLURM_CONF)
    assert f"CPUs={cluster_image.CPUS}" in settings["NodeName"] and cluster_image.CPUS == 4
    assert settings["NodeName"].startswith(f"{cluster_image.NODE} NodeAddr=127.0.0.1")
    assert f"Nodes={cluster_image.NODE} Default=YES" in settings["PartitionName"]
    assert settings["ProctrackType"] == "proctrack/linuxproc"
    assert settings["TaskPlugin"] == "task/none"
    assert settings["AccountingStorageType"] == "accounting_storage/none"
    assert not any("cgroup" in value for value in settings.values())


def test_the_cluster_is_offline_and_runs_sifs_as_the_lab_does(tmp_path):
    shared = tmp_path / "cluster" / "shared"
    argv = slurm.start_argv("/usr/bin/docker", "factory/cluster:abc", shared)
    assert argv[argv.index("--network") + 1] == "none"
    assert "--privileged" not in argv
    assert f"{shared}:{shared}" in argv  # the same absolute path inside
    joined = " ".join(argv)
    assert " ".join(apptainer.UNPRIVILEGED) in joined  # the lab's own options, not a copy
    assert argv[-1] == apptainer.PREPARE + f"exec {cluster_image.ENTRYPOINT}"
    assert argv[argv.index("--hostname") + 1] == cluster_image.NODE


def test_the_mpi_plugins_srun_offers():
    assert slurm.mpi_plugins(SRUN_MPI_LIST) == ("none", "pmix", "cray_shasta", "pmi2",
                                                "pmix_v5")
    assert slurm.mpi_plugins("") == ()


def test_no_record_no_cluster(tmp_path):
    """Without a record nothing is asked of Docker and nothing is stopped; a damaged record
    is no cluster either."""
    assert slurm.find(tmp_path, "/nonexistent/docker") is None
    assert slurm.stop(tmp_path, "/nonexistent/docker") is False
    slurm.marker(tmp_path).write_text("{not json")
    assert slurm.find(tmp_path, "/nonexistent/docker") is None


def test_a_cluster_record_reads_back(tmp_path):
    cluster = slurm.Cluster("factory-cluster", "factory/cluster:abc", tmp_path / "shared",
                            ("none", "pmix", "pmi2"), "/usr/bin/docker")
    assert slurm.Cluster.from_json(cluster.to_json(), "/usr/bin/docker") == cluster


def test_lab_with_something_unknown_is_bad_input():
    done = subprocess.run([sys.executable, "-m", "pipeline", "lab", "up", "--with", "grid"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "invalid choice: 'grid' (choose from 'cluster')" in done.stderr
    assert "Traceback" not in done.stderr
