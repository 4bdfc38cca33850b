"""The lab's one-node Slurm cluster, running: start, find, stop, and jobs submitted to it.

``lab up --with cluster`` starts a container ``factory-cluster`` of the cluster image
(``cluster_image.py``), the offline cluster of the users' documents:

* ``--network none``: no network at all; slurmctld and slurmd talk over loopback;
* the privileges the lab's Apptainer container gets to run SIFs unprivileged
  (``pipeline.tools.apptainer.UNPRIVILEGED`` and its ``PREPARE``): jobs run as ``hpc``
  (uid 1000), whose ``apptainer exec`` needs user namespaces and FUSE;
* ``<lab dir>/cluster/shared`` bound at the same absolute path: the shared filesystem.  The
  login node (here the host) writes SIFs and modules there (``cluster pull``), the offline
  node reads them, and jobs write their output there (the folder is world-writable and
  sticky, like ``/tmp``, since job output belongs to uid 1000).

What runs is recorded in ``<lab dir>/cluster.json`` (:class:`Cluster`); ``lab down``
removes the container and the record.  :meth:`Cluster.submit`, :meth:`Cluster.wait` and
:meth:`Cluster.output` are what a user does on a login node (``sbatch``, watching the
queue, reading the job's output file), through ``docker exec`` as ``hpc``.  There is no
accounting (no ``sacct``): a job's state comes from ``scontrol show job``, which keeps
finished jobs for ``MinJobAge`` (an hour).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.lab import cluster_image
from pipeline.tools import apptainer

CONTAINER = "factory-cluster"
LABEL = "org.sjtuhpc.factory.lab=cluster"
READY_TIMEOUT = 90.0  # seconds for slurmd to register with slurmctld
COMMAND_TIMEOUT = 60
SERVING = ("idle", "mixed", "allocated", "completing")  # the node takes or runs jobs
# No more changes once a job is in one of these (squeue's and scontrol's names).
FINISHED = frozenset(("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                      "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"))


class ClusterError(RuntimeError):
    """The cluster does not start or answer, or Slurm refuses what it is asked."""


def marker(lab_dir: Path) -> Path:
    return lab_dir / "cluster.json"


def shared_folder(lab_dir: Path) -> Path:
    """The shared filesystem, at the same absolute path on the host and in the cluster."""
    return lab_dir.resolve() / "cluster" / "shared"


@dataclass(frozen=True)
class Cluster:
    container: str
    image: str
    shared: Path
    mpi_plugins: tuple  # what ``srun --mpi=list`` offers, e.g. ("none", "pmix", "pmi2")
    docker: str = "docker"  # the CLI that reaches it (not recorded)

    def to_json(self) -> dict:
        return {"container": self.container, "image": self.image, "shared": str(self.shared),
                "mpi_plugins": list(self.mpi_plugins)}

    @classmethod
    def from_json(cls, data: dict, docker: str) -> Cluster:
        return cls(data["container"], data["image"], Path(data["shared"]),
                   tuple(data["mpi_plugins"]), docker)

    # -- commands in the cluster, as the user hpc ------------------------------------------
    def run(self, command: list, *, stdin: str | None = None, login: bool = False,
            timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        """``command`` as ``hpc`` in the shared folder; ``login``: in a login shell, as a user
        types it (``/etc/profile.d``: Lmod's ``module``), ``command`` then being one string."""
        argv = [self.docker, "exec", *(["-i"] if stdin is not None else []),
                "-u", cluster_image.USER, "-w", str(self.shared), self.container]
        argv += ["bash", "-lc", *command] if login else command
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                  check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"the cluster did not answer `{' '.join(command)}` within "
                               f"{timeout:.0f} s") from None

    def _answer(self, command: list, **options) -> str:
        done = self.run(command, **options)
        if done.returncode:
            raise ClusterError(f"`{' '.join(command)}` in the cluster: exit {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()}")
        return done.stdout

    def node_state(self) -> str | None:
        """The node's state as ``sinfo`` says it (``idle``, ...); None when Slurm does not
        answer."""
        try:
            done = self.run(["sinfo", "-h", "-n", cluster_image.NODE, "-o", "%T"], timeout=20)
        except ClusterError:
            return None
        state = done.stdout.strip() if done.returncode == 0 else ""
        return state or None

    # -- jobs ------------------------------------------------------------------------------
    def submit(self, script: str) -> str:
        """``sbatch`` the job script ``script`` from a login shell (so the job inherits what
        the login shell has, ``module`` included); returns the job id."""
        answer = self._answer(["sbatch --parsable"], stdin=script, login=True).strip()
        job_id = answer.split(";")[0]  # --parsable: "<id>" or "<id>;<cluster>"
        if not job_id.isdigit():
            raise ClusterError(f"sbatch answered {answer!r}, not a job id")
        return job_id

    def job(self, job_id: str) -> dict:
        """``scontrol show job``'s fields (JobState, StdOut, ExitCode, ...)."""
        text = self._answer(["scontrol", "show", "job", "-o", job_id])
        # One line of KEY=VALUE separated by spaces; the values read here have no spaces.
        return dict(f.partition("=")[::2] for f in text.split() if "=" in f)

    def wait(self, job_id: str, timeout: float, poll: float = 1.0) -> str:
        """The job's state once it is finished (COMPLETED, FAILED, ...), or its state when
        ``timeout`` seconds have passed (PENDING, RUNNING, ...)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.job(job_id).get("JobState", "UNKNOWN")
            if state in FINISHED or time.monotonic() >= deadline:
                return state
            time.sleep(poll)

    def output(self, job_id: str) -> str:
        """What the job wrote to its output file (``#SBATCH -o``, default
        ``slurm-<id>.out`` in the folder it was submitted from)."""
        path = self.job(job_id).get("StdOut", "")
        if not path:
            raise ClusterError(f"job {job_id} has no output file")
        return self._answer(["cat", path])


def start_argv(docker: str, image: str, shared: Path) -> list:
    """``docker run`` of the cluster: no network, FUSE and user namespaces for unprivileged
    Apptainer, the shared folder at its own path, an init that reaps the jobs' orphans."""
    return [docker, "run", "-d", "--init", "--name", CONTAINER, "--label", LABEL,
            "--hostname", cluster_image.NODE, "--network", "none",
            # Slurm resolves the node's name; without a network only /etc/hosts can answer.
            "--add-host", f"{cluster_image.NODE}:127.0.0.1",
            *apptainer.UNPRIVILEGED, "-v", f"{shared}:{shared}", image,
            "sh", "-c", apptainer.PREPARE + f"exec {cluster_image.ENTRYPOINT}"]


def mpi_plugins(listing: str) -> tuple:
    """The plugin names in ``srun --mpi=list``'s output, specific versions included.

    >>> mpi_plugins("MPI plugin types are...\\n\\tnone\\n\\tpmix\\n\\tpmi2\\n"
    ...             "specific pmix plugin versions available: pmix_v5\\n")
    ('none', 'pmix', 'pmi2', 'pmix_v5')
    """
    names = []
    for line in listing.splitlines():
        if line.startswith(("\t", " ")) and line.strip():
            names.append(line.strip())
        elif "versions available:" in line:
            names += line.partition("versions available:")[2].replace(",", " ").split()
    return tuple(names)


def find(lab_dir: Path, docker: str) -> Cluster | None:
    """The cluster ``lab up`` recorded, when its container runs (whether Slurm answers is
    :meth:`Cluster.node_state`'s to say)."""
    try:
        cluster = Cluster.from_json(json.loads(marker(lab_dir).read_text()), docker)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    running = _inspect(docker, "{{.State.Running}} {{.Config.Image}}")
    return cluster if running == f"true {cluster.image}" else None


def ensure(lab_dir: Path, docker: str, image: str) -> tuple[Cluster, bool]:
    """The cluster of ``image``, started unless it already runs and answers; (cluster,
    whether it was started now)."""
    shared = shared_folder(lab_dir)
    shared.mkdir(parents=True, exist_ok=True)
    shared.chmod(0o1777)
    found = find(lab_dir, docker)
    if (found is not None and found.image == image and found.shared == shared
            and found.node_state() in SERVING):
        return found, False
    _remove(docker)
    done = subprocess.run(start_argv(docker, image, shared), capture_output=True, text=True,
                          check=False, timeout=COMMAND_TIMEOUT)
    if done.returncode:
        raise ClusterError(f"could not start {CONTAINER}: {done.stderr.strip()}")
    cluster = Cluster(CONTAINER, image, shared, (), docker)
    deadline = time.monotonic() + READY_TIMEOUT
    while (state := cluster.node_state()) != "idle":
        if time.monotonic() > deadline or _inspect(docker, "{{.State.Running}}") != "true":
            logs = subprocess.run([docker, "logs", "--tail", "20", CONTAINER],
                                  capture_output=True, text=True, check=False).stdout
            raise ClusterError(f"{CONTAINER}: the node is not idle after "
                               f"{READY_TIMEOUT:.0f} s (state {state}); its logs end:\n{logs}")
        time.sleep(1)
    plugins = mpi_plugins(cluster._answer(["srun", "--mpi=list"]))
    cluster = Cluster(CONTAINER, image, shared, plugins, docker)
    marker(lab_dir).write_text(json.dumps(cluster.to_json(), indent=2) + "\n")
    return cluster, True


def stop(lab_dir: Path, docker: str) -> bool:
    """Remove the cluster ``lab up`` recorded; False when there was none."""
    if not marker(lab_dir).exists():
        return False
    _remove(docker)
    marker(lab_dir).unlink()
    return True


def _inspect(docker: str, template: str) -> str | None:
    done = subprocess.run([docker, "container", "inspect", "-f", template, CONTAINER],
                          capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT)
    return done.stdout.strip() if done.returncode == 0 else None


def _remove(docker: str) -> None:
    """Remove the container named ``factory-cluster`` when the lab made it (its label);
    refuse to touch one it did not make."""
    labels = _inspect(docker, "{{json .Config.Labels}}")
    if labels is None:
        return
    key, _, value = LABEL.partition("=")
    if (json.loads(labels) or {}).get(key) != value:
        raise ClusterError(f"a container named {CONTAINER} exists that the lab did not make; "
                           "remove or rename it")
    subprocess.run([docker, "rm", "-f", CONTAINER], capture_output=True, check=False,
                   timeout=COMMAND_TIMEOUT)
