"""The downstream cluster, end to end, on what the shared pipeline run published
(``apps_run``): the catalogue read from the registry, ``cluster pull`` onto the lab's
one-node Slurm cluster's shared folder (the login node, here the host, reaches the
registry; the node, a container with no network at all, does not), ``module load`` in a
job script, and ``sbatch`` jobs of the users' shape run by Slurm:

* ``srun --mpi=pmix -n 4 lmp -in in.melt`` through the module's wrapper (each rank an
  ``apptainer exec`` of the pulled LAMMPS SIF): one 4-rank run that finishes;
* ``srun --mpi=pmix -n 4 apptainer exec <base SIF> mpi_hello``: 4 distinct ranks of one
  world, each once.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from pipeline.cli import main
from pipeline.cluster.layout import sif_path
from pipeline.tools.digests import sha256_file
from tests.integration.cluster_lab import bring_up_cluster, compile_hello, hello_job
from tests.integration.lab import REPO, trusted

JOB_TIMEOUT = 300


@pytest.fixture(scope="module")
def site(apps_run):
    cluster = bring_up_cluster()
    space = apps_run["base"].split("/")[0]
    dest = cluster.shared / f"site-{space}"
    catalog_ref = f"{apps_run['settings'].registry}/{space}/catalog:latest"
    select = f"{apps_run['base']}:ompi-4.1,{apps_run['app']}:lammps-gnu-2022"
    argv = ["cluster", "pull", "--catalog", catalog_ref, "--dest", str(dest),
            "--select", select, "--arch", "amd64"]
    first = main(argv)
    yield {"cluster": cluster, "dest": dest, "first": first, "argv": argv, "run": apps_run}
    shutil.rmtree(dest, ignore_errors=True)


def published_tags(run: dict) -> set[str]:
    """The image tags the run published (the catalogue's own publication is not one)."""
    catalog = run["base"].split("/")[0] + "/catalog"
    return {f"{p['repository']}:{p['tag']}" for p in run["summary"]["publications"]
            if p["result"] == "published" and p["repository"] != catalog}


def test_the_run_refreshed_the_catalogue_with_exactly_the_published_tags(apps_run):
    site_dir = apps_run["root"] / "out" / "site"
    catalog = json.loads((site_dir / "catalog.json").read_text())
    listed = {f"{i['repository']}:{i['tag']}" for i in catalog["images"]}
    assert listed == published_tags(apps_run)
    assert (site_dir / "catalog.json.sha256").read_text().split()[0] == \
        sha256_file(site_dir / "catalog.json").removeprefix("sha256:")
    assert (site_dir / "index.html").is_file()
    # The real LAMMPS image carries its workload result into the catalogue.
    [lammps] = [i for i in catalog["images"] if i["tag"] == "lammps-gnu-2022"]
    [test] = [t for t in lammps["arches"]["amd64"]["tests"] if t["name"] == "%test"]
    assert test["reason"].startswith("workload: lammps melt: 2 ranks")
    assert lammps["module"] == "lammps/gnu-2022" and lammps["commands"] == ["lmp"]


def test_catalog_json_is_in_the_registry_and_a_new_catalog_gives_the_same_bytes(
        apps_run, tmp_path):
    space = apps_run["base"].split("/")[0]
    registry = trusted()
    found = registry.manifest(f"{space}/catalog", "latest")
    assert found is not None, "catalog.json was not pushed"
    [layer] = json.loads(found[0])["layers"]
    pushed = registry.blob_bytes(f"{space}/catalog", layer["digest"])
    local = (apps_run["root"] / "out" / "site" / "catalog.json").read_bytes()
    assert pushed == local
    code = main(["catalog", "--matrix", str(apps_run["matrix"]), "--out", str(tmp_path)])
    assert code == 0
    assert (tmp_path / "catalog.json").read_bytes() == local


def test_pull_places_the_sifs_by_digest_and_a_second_pull_downloads_nothing(site, capsys):
    assert site["first"] == 0
    catalog = json.loads((site["dest"] / "catalog.json").read_text())
    assert {i["tag"] for i in catalog["images"]} == {"ompi-4.1", "lammps-gnu-2022"}
    for image in catalog["images"]:
        path = sif_path(site["dest"], image, "amd64")
        assert path.is_file()
        assert sha256_file(path) == image["arches"]["amd64"]["sif"]["blob"]
    capsys.readouterr()
    assert main(site["argv"]) == 0
    out = capsys.readouterr().out
    assert out.count("already here") == 2, out
    assert "downloaded" not in out, out


def test_a_job_loads_the_lammps_module_and_runs_the_melt_on_four_ranks(site):
    cluster, dest = site["cluster"], site["dest"]
    work = dest.parent / f"{dest.name}-melt"
    work.mkdir(exist_ok=True)
    work.chmod(0o1777)
    shutil.copy(REPO / "images/app/lammps/workload/in.melt", work / "in.melt")
    script = (f"#!/bin/bash\n"
              f"#SBATCH -n 4\n"
              f"#SBATCH -o {work}/lammps-%j.out\n"
              f"module use {dest}/modules\n"
              f"module load lammps/gnu-2022\n"
              f"cd {work}\n"
              f"srun --mpi=pmix -n 4 lmp -in in.melt\n")
    job = cluster.submit(script)
    state = cluster.wait(job, JOB_TIMEOUT)
    output = cluster.output(job)
    assert state == "COMPLETED", output[-3000:]
    # One run on 4 procs (4 singletons would each say "on 1 procs").
    loops = re.findall(r"^Loop time of .* on (\d+) procs", output, re.M)
    assert loops == ["4"], output[-3000:]


def test_a_job_runs_mpi_hello_in_the_pulled_base_sif_on_four_distinct_ranks(site):
    cluster, dest = site["cluster"], site["dest"]
    catalog = json.loads((dest / "catalog.json").read_text())
    [base] = [i for i in catalog["images"] if i["tag"] == "ompi-4.1"]
    sif = sif_path(dest, base, "amd64")
    binary = compile_hello(cluster, sif)
    job = cluster.submit(hello_job(cluster, sif, binary, "pmix"))
    state = cluster.wait(job, JOB_TIMEOUT)
    output = cluster.output(job)
    assert state == "COMPLETED", output[-3000:]
    ranks = sorted(int(r) for r in re.findall(r"hello from rank (\d+) of 4", output))
    assert ranks == [0, 1, 2, 3], output[-3000:]
