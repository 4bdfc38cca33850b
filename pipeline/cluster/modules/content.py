"""What a module says and does, the same for Lmod and Environment Modules (``lua`` and
``tcl`` only write it in their syntax): the ``whatis`` lines, the ``help`` text, the name it
conflicts with, the wrappers' folder it puts on ``PATH`` and the variables it sets.

The help text names the SIF by its full path, which only the modulefile knows when it is
read (the tree is relocatable), so the text holds :data:`SIF` where the path goes and each
language splices its variable in.

The launch lines are the hybrid model a cluster uses: the host's launcher starts one
container per rank, and the container's MPI must talk to the host's:

* Open MPI: ``srun --mpi=pmix`` (Open MPI 4 and 5 speak PMIx), or a host Open MPI of the
  same major version with its ``mpirun``;
* MPICH: ``srun --mpi=pmi2``, or any host MPI of the MPICH ABI (MPICH, Intel MPI, MVAPICH,
  Cray MPICH) with its ``mpirun``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.cluster.modules import tree
from pipeline.cluster.modules.entries import Entry
from pipeline.cluster.modules.quoting import sh
from pipeline.cluster.site_config import SiteConfig

SIF = "\0sif\0"  # where the SIF's path goes; catalogue text holds no control characters
RANKS = 4
MY_PROGRAM = "./my_program"  # a base's launch lines run what the user built with its mpicc


@dataclass(frozen=True)
class Content:
    module: str  # what users load: lammps/gnu-2022
    levels: int  # parent steps from the modulefile to the site folder
    sifs: tuple  # (machine, path relative to the site folder), per arch with a SIF
    missing: tuple  # the message when the node's machine has no SIF: (before, after) it
    whatis: list
    help: list  # lines; SIF marks the path of the node's SIF
    conflict: str  # the name whose other versions this one excludes
    path: str | None  # the wrappers' folder relative to the site folder, if any
    sif_variable: str  # set to the node's SIF: LAMMPS_SIF
    image_variable: str  # set to image: LAMMPS_IMAGE
    image: str


def content(entry: Entry, site: SiteConfig) -> Content:
    module = tree.module_name(entry, site)
    machines = ", ".join(s.machine for s in entry.sifs)
    return Content(
        module=module, levels=tree.levels(site),
        sifs=tuple((s.machine, s.path) for s in entry.sifs),
        missing=(f"{module}: this site folder has no SIF of {entry.image} for ",
                 f" (it has one for {machines})"),
        whatis=whatis(entry), help=help_lines(entry, module, site),
        conflict=module.rpartition("/")[0],
        path=tree.wrappers_dir(entry) if entry.commands else None,
        sif_variable=f"{entry.variable}_SIF", image_variable=f"{entry.variable}_IMAGE",
        image=entry.image)


def whatis(entry: Entry) -> list[str]:
    """One-line facts, as ``module whatis`` and ``module spider`` show them."""
    lines = [f"Description: {entry.description}" if entry.description else "",
             f"Image: {entry.image} ({entry.kind})",
             f"Cell: {entry.os or '-'}, GCC {entry.gcc or '-'}, "
             f"{'no MPI' if entry.mpi == 'none' else entry.mpi}, "
             f"{'no CUDA' if entry.cuda == 'none' else 'CUDA ' + entry.cuda}",
             f"Commands: {' '.join(entry.commands)}" if entry.commands else ""]
    return [line for line in lines if line]


def help_lines(entry: Entry, module: str, site: SiteConfig) -> list[str]:
    """The lines of ``module help``; :data:`SIF` marks the full path of this node's SIF."""
    lines = [f"{module}: {entry.description or entry.image}", "",
             f"  Image     {entry.image} ({entry.kind})",
             f"  OS        {entry.os}",
             f"  GCC       {entry.gcc}",
             f"  MPI       {entry.mpi}",
             f"  CUDA      {entry.cuda}"]
    if entry.commands:
        lines.append(f"  Commands  {' '.join(entry.commands)} (each runs in the container)")
    lines.append(f"  SIF       {SIF}")
    lines += [f"  {sif.arch:<9} {sif.blob} (sha256 of the file)" for sif in entry.sifs]
    if entry.source:
        lines.append(f"  Source    {entry.source}")
    if entry.created:
        lines.append(f"  Created   {entry.created}")
    variable = f'"${entry.variable}_SIF"'
    lines += ["", f"  ${entry.variable}_SIF is the SIF's path, ${entry.variable}_IMAGE its tag."]
    if program_of(entry) == MY_PROGRAM and "mpicc" in entry.commands:
        lines.append(f"  Build in the container: mpicc -o {MY_PROGRAM} my_program.c")
    lines += ["", *launch_lines(entry, site, variable)]
    return lines


def launch_lines(entry: Entry, site: SiteConfig, sif: str) -> list[str]:
    """How to run the image in a job: the hybrid MPI lines that fit its MPI."""
    program = program_of(entry)
    run = " ".join([sh(site.apptainer), "exec", *(["--nv"] if entry.gpu else []),
                    *(f"--bind {sh(b)}" for b in site.binds), sif, program])
    if entry.mpi_family == "openmpi":
        major = entry.mpi_version.split(".")[0]
        host = f"a host Open MPI {major}.x" if major else "a host Open MPI"
        return ["  MPI job, one container per rank (Slurm with PMIx):",
                f"    srun --mpi=pmix -n {RANKS} {run}",
                f"  or with {host} (the same major version as the container's):",
                f"    mpirun -np {RANKS} {run}"]
    if entry.mpi_family == "mpich":
        return ["  MPI job, one container per rank (Slurm with PMI2):",
                f"    srun --mpi=pmi2 -n {RANKS} {run}",
                "  or with a host MPI of the MPICH ABI (MPICH, Intel MPI, MVAPICH, Cray MPICH):",
                f"    mpirun -np {RANKS} {run}"]
    return ["  In a job:", f"    srun -n 1 {run}"]


def program_of(entry: Entry) -> str:
    """What the launch lines run: an app's first command; for a base, the user's program."""
    if entry.kind == "app" and entry.commands:
        return entry.commands[0]
    return MY_PROGRAM if entry.kind in ("base", "gpu") else "COMMAND"
