"""The modules of a site folder with the real tools: Debian's Lmod and Environment Modules
load them, and their wrappers run commands in a real SIF with the lab's Apptainer.

The two Debian packages conflict, so each lives in its own image FROM the lab's Apptainer
image (built once per runtime image, then reused): ``factory/modules-test-lmod:<key>`` and
``factory/modules-test-tcl:<key>``.  They run as the lab's cluster node runs (uid 1000, FUSE,
user namespaces: ``Apptainer.node_argv``).  The SIF is a real one of a tiny image (``sh``,
two scripts and a file that only the SIF holds), built with ``apptainer build`` from
``docker-daemon://`` as the convert stage builds.

The site folder is written at one path and moved before any tool reads it: everything
below runs in a relocated tree, as after ``cluster import`` into another folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from pipeline.cluster import layout
from pipeline.cluster.modules import write_modules
from pipeline.cluster.modules.entries import MACHINES
from pipeline.tools import apptainer
from pipeline.tools.apptainer import Apptainer, Node
from pipeline.tools.digests import sha256_file
from pipeline.tools.docker_engine import BuildClient, find_build_client
from tests.integration.lab import bring_up

# system -> (the Debian package, its shell init)
SYSTEMS = {"lmod": ("lmod", "/usr/share/lmod/lmod/init/bash"),
           "tcl": ("environment-modules", "/usr/share/modules/init/bash")}
CHECK_SYNTAX = "/usr/share/lmod/lmod/libexec/check_module_tree_syntax"
PAYLOAD_TEXT = "the payload SIF"  # in /etc/factory-payload: only inside the SIF
# A root filesystem of the runtime image's dash and the libraries it needs, an empty
# passwd and group (Apptainer fills them in), and two commands: `hello` says where it runs,
# `show FILE` prints a file (a bound one, below) with shell builtins only.
PAYLOAD = r"""FROM {runtime} AS tools
RUN mkdir -p /payload/bin /payload/etc /payload/usr/bin \
 && cp /bin/dash /payload/bin/sh \
 && ldd /bin/dash | grep -o '/[^ ]*' | xargs -I{{}} cp -L --parents {{}} /payload \
 && touch /payload/etc/passwd /payload/etc/group \
 && echo "{text}" > /payload/etc/factory-payload \
 && printf '#!/bin/sh\nread -r where < /etc/factory-payload\necho "hello from $where: $*"\n' \
      > /payload/usr/bin/hello \
 && printf '#!/bin/sh\nwhile IFS= read -r line; do echo "$line"; done < "$1"\n' \
      > /payload/usr/bin/show \
 && chmod 755 /payload/usr/bin/*
FROM scratch
COPY --from=tools /payload /
"""
HOSTILE = ('say "]] ]==] $(touch {traps}/sh) `touch {traps}/bt` [exec touch {traps}/tcl] '
           'os.execute("touch {traps}/lua") \\ {{ }} ; %s é ☃')
BOUND_TEXT = "bound into the SIF read-only"
ARCH = {machine: arch for arch, machine in MACHINES.items()}[platform.machine()]  # the SIF's


def built_once(client: BuildClient, name: str, dockerfile: str) -> str:
    """``name``:<key of the Dockerfile>, built unless the engine has it."""
    image = f"{name}:{hashlib.sha256(dockerfile.encode()).hexdigest()[:12]}"
    present = subprocess.run([client.path, "image", "inspect", image], capture_output=True,
                             check=False).returncode == 0
    if not present:
        with tempfile.TemporaryDirectory() as context:
            (Path(context) / "Dockerfile").write_text(dockerfile)
            done = subprocess.run([*client.build_argv(), "--network", "host", "-t", image,
                                   context], capture_output=True, text=True, check=False,
                                  env={**os.environ, **client.env()}, timeout=900)
            assert done.returncode == 0, f"building {image} failed:\n{done.stderr[-3000:]}"
    return image


@pytest.fixture(scope="module")
def lab() -> tuple[BuildClient, Apptainer]:
    settings = bring_up()
    client = find_build_client(settings)
    runtime = apptainer.find(settings.lab_dir, client)
    if runtime.kind != "container":
        pytest.skip("the host has its own Apptainer, so the lab has no Apptainer image to "
                    "build the Lmod and Environment Modules images FROM")
    return client, runtime


@pytest.fixture(scope="module")
def node(lab) -> dict:
    """system -> the runtime with that system's image as its cluster node."""
    client, runtime = lab
    return {system: dataclasses.replace(runtime, node=Node(built_once(
        client, f"factory/modules-test-{system}",
        f"FROM {runtime.image}\nRUN apt-get update \\\n"
        f" && apt-get install -y --no-install-recommends {package} \\\n"
        " && rm -rf /var/lib/apt/lists/*\n")))
        for system, (package, _) in SYSTEMS.items()}


@pytest.fixture(scope="module")
def sif(lab, tmp_path_factory) -> Path:
    client, runtime = lab
    payload = built_once(client, "factory/modules-test-payload",
                         PAYLOAD.format(runtime=runtime.image, text=PAYLOAD_TEXT))
    folder = tmp_path_factory.mktemp("sif")
    path = folder / "payload.sif"
    runtime.output(["build", "--disable-cache", str(path), f"docker-daemon://{payload}"],
                   [folder], docker_socket=True)
    return path


def image(name: str, version: str, blob: str, description: str, **extra) -> dict:
    return {"repository": "factorytest/modules", "tag": f"{name}-{version}", "name": name,
            "kind": "app", "description": description, "module": f"{name}/{version}",
            "commands": ["hello", "show"],
            "variables": {"os": "debian13", "gcc": "14", "mpi_family": "none", "cuda": "none"},
            "arches": {ARCH: {"sif": {"blob": blob}}}, **extra}


@pytest.fixture(scope="module")
def sites(sif, tmp_path_factory) -> dict:
    """system -> the moved site folder (and its data and traps folders)."""
    root = tmp_path_factory.mktemp("modules")
    root.chmod(0o755)  # the tools run as uid 1000
    traps, data = root / "traps", root / "data"
    traps.mkdir()
    traps.chmod(0o777)  # so that a command substitution that ran could leave a file
    data.mkdir()
    (data / "file").write_text(BOUND_TEXT + "\n")
    blob = sha256_file(sif)
    description = HOSTILE.format(traps=traps)
    catalog = {"schema": 1, "images": [
        image("hello", "1.0", blob, description),
        image("hello", "2.0", blob, "the second version"),
        image("hello-gpu", "1.0", blob, "the same, as a GPU image", kind="gpu",
              variables={"os": "debian13", "gcc": "14", "mpi_family": "mpich",
                         "mpi_version": "4.2", "cuda": "12.4"})]}
    out = {}
    for system in SYSTEMS:
        written = root / system / "written"
        written.mkdir(parents=True)
        (written / layout.CATALOG).write_text(json.dumps(catalog))
        (written / layout.SITE).write_text(f"binds: ['{data}:/data:ro']\nmodules: {system}\n")
        for entry in catalog["images"]:
            target = layout.sif_path(written, entry, ARCH)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sif, target)
        write_modules(written)
        moved = root / system / "moved"
        written.rename(moved)
        out[system] = {"dest": moved, "traps": traps, "description": description,
                       "sif": layout.sif_path(moved, catalog["images"][0], ARCH)}
    return out


def run(node: dict, sites: dict, system: str, script: str) -> str:
    """``script`` in bash, after the module system's init and ``module use``, as uid 1000 in
    ``system``'s image; its output (stdout and stderr)."""
    dest = sites[system]["dest"]
    root = dest.parents[1]
    full = (f"export LANG=C.UTF-8\n. {SYSTEMS[system][1]}\n"
            f"module use {dest / layout.MODULES}\n{script}")
    argv = node[system].node_argv(["bash", "-c", full], [root])
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{system}: exit {done.returncode}:\n{output}"
    return output


@pytest.fixture(scope="module", params=list(SYSTEMS))
def system(request) -> str:
    return request.param


def test_a_loaded_module_runs_its_commands_in_the_sif_with_the_sites_binds(node, sites,
                                                                            system):
    out = run(node, sites, system, "module avail 2>&1\n"
              "module load hello/1.0\n"
              'echo "sif=$HELLO_SIF image=$HELLO_IMAGE"\n'
              'hello "two words" x\n'
              "show /data/file\n")
    for module in ("hello/1.0", "hello/2.0", "hello-gpu/1.0"):
        assert module in out
    assert "hello from the payload SIF: two words x\n" in out  # the file only the SIF has
    assert BOUND_TEXT + "\n" in out  # site.yaml's bind
    assert f"sif={sites[system]['sif']} image=factorytest/modules:hello-1.0\n" in out


def test_a_gpu_image_runs_with_nv_where_there_is_no_gpu(node, sites, system):
    out = run(node, sites, system, "module load hello-gpu/1.0\ncommand -v hello\nhello gpu\n"
              "module help hello-gpu/1.0 2>&1\n")
    assert "/wrappers/hello-gpu/1.0/bin/hello\n" in out
    assert "hello from the payload SIF: gpu\n" in out
    assert 'srun --mpi=pmi2 -n 4 apptainer exec --nv --bind ' in out


def test_two_versions_of_one_name_are_never_loaded_together(node, sites, system):
    out = run(node, sites, system, "module load hello/1.0\n"
              'module load hello/2.0; echo "second load: $?"\n'
              "module -t list 2>&1\n"
              'echo "image=$HELLO_IMAGE"\n')
    loaded = [line for line in out.splitlines() if line.startswith("hello/")]
    if system == "lmod":  # Lmod swaps versions of one name
        assert loaded == ["hello/2.0"], out
        assert "image=factorytest/modules:hello-2.0" in out
    else:  # Environment Modules refuses the second: conflict hello
        assert "second load: 1" in out and "conflict" in out
        assert loaded == ["hello/1.0"], out
        assert "image=factorytest/modules:hello-1.0" in out


def test_catalogue_text_stays_text(node, sites, system):
    traps, description = sites[system]["traps"], sites[system]["description"]
    out = run(node, sites, system, "module whatis hello/1.0 2>&1\nmodule help hello/1.0 2>&1\n"
              "module load hello/1.0\nmodule unload hello/1.0\n")
    assert f"Description: {description}" in out  # whatis
    assert f"hello/1.0: {description}" in out  # help
    assert list(traps.iterdir()) == []


def test_lmods_syntax_checker_accepts_the_tree(node, sites):
    out = run(node, sites, "lmod", f"{CHECK_SYNTAX} {sites['lmod']['dest'] / layout.MODULES}\n"
              "module spider hello 2>&1\n")
    assert "No errors found" in out
    assert "hello/1.0" in out and "hello/2.0" in out


def test_environment_modules_reads_every_tcl_module(node, sites):
    out = run(node, sites, "tcl", "for m in hello/1.0 hello/2.0 hello-gpu/1.0; do\n"
              '  module display "$m" >/dev/null 2>&1 || echo "cannot display $m"\n'
              "done\nmodule avail -t 2>&1\n")
    assert "cannot display" not in out
    assert {"hello/1.0", "hello/2.0", "hello-gpu/1.0"} <= set(out.split())
