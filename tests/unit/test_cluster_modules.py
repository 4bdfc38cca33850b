"""Modulefiles and wrappers for a site folder: what they say, run and remove (no Docker).

The wrappers run for real under ``sh``, with the site's ``apptainer`` set to a script that
prints the command line it gets (the real Apptainer, Lmod and Environment Modules run in
``tests/integration/test_modules.py``).  The Tcl modulefiles are read by a real ``tclsh``
with the module commands defined to print their arguments.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.cluster import layout
from pipeline.cluster.modules import entries, write_modules
from pipeline.cluster.modules.quoting import lua, sh, tcl

SAMPLE = json.loads((Path(__file__).parents[1] / "data/catalog-sample.json").read_text())
HOSTILE = ('say "]] ]==] $(touch {dir}/sh) `touch {dir}/bt` [exec touch {dir}/tcl] '
           'os.execute("touch {dir}/lua") \\ {{ }} ; %s é ☃')
HERE = {machine: arch for arch, machine in entries.MACHINES.items()}.get(platform.machine())
needs_known_machine = pytest.mark.skipif(HERE is None, reason=f"no catalogue arch runs on "
                                         f"this machine ({platform.machine()})")


def site(tmp_path: Path, catalog: dict | None = None, config: str | None = None) -> Path:
    dest = tmp_path / "site"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / layout.CATALOG).write_text(json.dumps(SAMPLE if catalog is None else catalog))
    if config is not None:
        (dest / layout.SITE).write_text(config)
    return dest


def image(name="hello", version="1.0", *, arch=None, kind="app", description="hello world",
          **variables) -> dict:
    """A catalogue entry whose SIF (``arch``: this machine's) has a sha256 made up from it;
    ``variables`` replace those of its cell."""
    arch = arch or HERE or "amd64"
    blob = "sha256:" + (f"{name}{version}".encode().hex() * 64)[:64]
    return {"repository": "site/apps", "tag": f"{name}-{version}", "name": name, "kind": kind,
            "description": description, "module": f"{name}/{version}",
            "commands": ["hello"],
            "variables": {"os": "debian12", "gcc": "12", "mpi_family": "none",
                          "mpi_version": "4.2", "cuda": "none", **variables},
            "arches": {arch: {"sif": {"blob": blob}}}}


def fake_apptainer(tmp_path: Path) -> Path:
    script = tmp_path / "fake-apptainer"
    script.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    script.chmod(0o755)
    return script


def run(wrapper: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(wrapper), *args], capture_output=True, text=True, check=False,
                          cwd=cwd, timeout=30)


def test_the_sample_gets_one_lmod_module_per_tag_with_a_sif(tmp_path):
    dest = site(tmp_path)
    written = write_modules(dest)
    assert [p.relative_to(dest).as_posix() for p in written] == [
        "modules/hpc-base-container/gcc-11.cuda-11.8.ompi-4.1.lua",
        "modules/hpc-base-container/ompi-4.1.lua",
        "modules/lammps/gnu-2022.lua",
        "modules/pi-mpi/1.0.lua"]
    wrappers = sorted(p.relative_to(dest).as_posix() for p in (dest / "wrappers").rglob("*")
                      if p.is_file())
    assert wrappers == [
        "wrappers/hpc-base-container/gcc-11.cuda-11.8.ompi-4.1/bin/mpicc",
        "wrappers/hpc-base-container/gcc-11.cuda-11.8.ompi-4.1/bin/mpirun",
        "wrappers/hpc-base-container/gcc-11.cuda-11.8.ompi-4.1/bin/nvcc",
        "wrappers/hpc-base-container/ompi-4.1/bin/mpicc",
        "wrappers/hpc-base-container/ompi-4.1/bin/mpirun",
        "wrappers/lammps/gnu-2022/bin/lmp",
        "wrappers/pi-mpi/1.0/bin/pi-mpi"]
    assert all(os.access(dest / w, os.X_OK) for w in wrappers)
    assert (dest / layout.SITE).exists()  # the defaults, written on first use


def test_an_lmod_module_says_what_it_holds_and_how_to_launch_it(tmp_path):
    dest = site(tmp_path)
    write_modules(dest)
    lammps = (dest / "modules/lammps/gnu-2022.lua").read_text()
    assert 'conflict("lammps")' in lammps
    assert 'prepend_path("PATH", pathJoin(site, "wrappers/lammps/gnu-2022/bin"))' in lammps
    assert 'setenv("LAMMPS_SIF", sif)' in lammps
    assert 'setenv("LAMMPS_IMAGE", "sjtuhpc/hpc-app-container:lammps-gnu-2022")' in lammps
    # Only amd64 has a SIF in the sample: arm64 nodes are told so instead of a broken path.
    blob = "5" * 64
    assert ('local sifs = {["x86_64"] = "containers/sjtuhpc/hpc-app-container/lammps-gnu-2022/'
            f'lammps-{blob}.sif"}}') in lammps
    assert 'whatis("Description: LAMMPS molecular dynamics (Debian package, Open MPI build)")' \
        in lammps
    assert 'whatis("Cell: debian12, GCC 12, Open MPI 4.1, no CUDA")' in lammps
    assert f"sha256:{blob} (sha256 of the file)" in lammps
    assert 'srun --mpi=pmix -n 4 apptainer exec \\"$LAMMPS_SIF\\" lmp' in lammps
    assert 'mpirun -np 4 apptainer exec \\"$LAMMPS_SIF\\" lmp' in lammps
    assert "a host Open MPI 4.x (the same major version" in lammps
    assert "--nv" not in lammps
    base = (dest / "modules/hpc-base-container/ompi-4.1.lua").read_text()
    assert '["aarch64"] = "containers/' in base and '["x86_64"] = "containers/' in base
    assert 'conflict("hpc-base-container")' in base
    assert "mpicc -o ./my_program my_program.c" in base
    assert 'srun --mpi=pmix -n 4 apptainer exec \\"$HPC_BASE_CONTAINER_SIF\\" ./my_program' \
        in base


def test_only_gpu_images_run_with_nv(tmp_path):
    dest = site(tmp_path)
    write_modules(dest)
    gpu = dest / "wrappers/hpc-base-container/gcc-11.cuda-11.8.ompi-4.1/bin"
    for command in ("nvcc", "mpicc", "mpirun"):
        assert f'exec apptainer exec --nv "$sif" {command} "$@"' in (gpu / command).read_text()
    assert "apptainer exec --nv" in (
        dest / "modules/hpc-base-container/gcc-11.cuda-11.8.ompi-4.1.lua").read_text()
    for plain in ("hpc-base-container/ompi-4.1/bin/mpicc", "lammps/gnu-2022/bin/lmp",
                  "pi-mpi/1.0/bin/pi-mpi"):
        assert "--nv" not in (dest / "wrappers" / plain).read_text()
    # An app on a CUDA cell is a GPU image too.
    dest = site(tmp_path / "app", {"images": [image("md", cuda="12.4")]})
    write_modules(dest)
    assert ' --nv "$sif" hello' in (dest / "wrappers/md/1.0/bin/hello").read_text()


@needs_known_machine
def test_launch_lines_fit_the_mpi_family(tmp_path):
    catalog = {"images": [image("a", mpi_family="mpich"), image("b", mpi_family="openmpi"),
                          image("c")]}
    dest = site(tmp_path, catalog, "binds: [/scratch]\n")
    write_modules(dest)
    mpich = (dest / "modules/a/1.0.lua").read_text()
    assert 'srun --mpi=pmi2 -n 4 apptainer exec --bind /scratch \\"$A_SIF\\" hello' in mpich
    assert "a host MPI of the MPICH ABI (MPICH, Intel MPI, MVAPICH, Cray MPICH)" in mpich
    assert "pmix" not in mpich and "Open MPI" not in mpich
    openmpi = (dest / "modules/b/1.0.lua").read_text()
    assert 'srun --mpi=pmix -n 4 apptainer exec --bind /scratch \\"$B_SIF\\" hello' in openmpi
    assert "a host Open MPI 4.x" in openmpi and "pmi2" not in openmpi
    serial = (dest / "modules/c/1.0.lua").read_text()
    assert 'srun -n 1 apptainer exec --bind /scratch \\"$C_SIF\\" hello' in serial
    assert "--mpi=" not in serial and "mpirun" not in serial


def test_tcl_modules_for_environment_modules(tmp_path):
    dest = site(tmp_path, config="modules: tcl\n")
    written = write_modules(dest)
    assert [p.relative_to(dest).as_posix() for p in written][2] == "modules/lammps/gnu-2022"
    text = written[2].read_text()
    assert text.startswith("#%Module1.0\n")
    assert 'conflict "lammps"' in text
    assert 'prepend-path PATH [file join $site "wrappers/lammps/gnu-2022/bin"]' in text
    assert 'setenv "LAMMPS_SIF" $sif' in text
    assert 'srun --mpi=pmix -n 4 apptainer exec \\"\\$LAMMPS_SIF\\" lmp' in text


def test_a_module_prefix_puts_every_module_in_a_folder(tmp_path):
    dest = site(tmp_path, config="module_prefix: containers/\n")
    written = write_modules(dest)
    assert written[2] == dest / "modules/containers/lammps/gnu-2022.lua"
    text = written[2].read_text()
    assert 'conflict("containers/lammps")' in text
    assert 'for _ = 1, 4 do site = site:match("^(.*)/") end' in text  # one folder deeper
    assert "containers/lammps/gnu-2022: LAMMPS" in text
    # The wrappers stay where the layout puts them.
    assert (dest / "wrappers/lammps/gnu-2022/bin/lmp").exists()


def test_every_call_writes_the_slice_again_and_removes_what_left_it(tmp_path):
    dest = site(tmp_path)
    own = dest / "modules/lammps/.modulerc.lua"  # a site's own file beside the generated ones
    own.parent.mkdir(parents=True)
    own.write_text('module_version("lammps/gnu-2022", "default")\n')
    write_modules(dest)
    lammps = dest / "modules/lammps/gnu-2022.lua"
    before = lammps.stat().st_mtime_ns
    smaller = copy.deepcopy(SAMPLE)
    smaller["images"] = [i for i in SAMPLE["images"] if i["name"] != "cuda-debian"]
    (dest / layout.CATALOG).write_text(json.dumps(smaller))
    write_modules(dest)
    assert not (dest / "modules/hpc-base-container/gcc-11.cuda-11.8.ompi-4.1.lua").exists()
    assert not (dest / "wrappers/hpc-base-container/gcc-11.cuda-11.8.ompi-4.1").exists()
    assert (dest / "modules/hpc-base-container/ompi-4.1.lua").exists()
    assert lammps.stat().st_mtime_ns == before  # unchanged: not rewritten
    # Switching to Tcl leaves no Lua module behind (Lmod would read both).
    write_modules(dest, "tcl")
    assert sorted(p.name for p in (dest / "modules/lammps").iterdir()) == [
        ".modulerc.lua", "gnu-2022"]
    assert own.read_text() == 'module_version("lammps/gnu-2022", "default")\n'
    assert not list(dest.rglob("*.partial"))


@needs_known_machine
def test_a_wrapper_runs_the_command_in_the_sif_with_the_sites_binds(tmp_path):
    fake = fake_apptainer(tmp_path)
    catalog = {"images": [image(), image("gpu-hello", kind="gpu", cuda="12.4")]}
    dest = site(tmp_path, catalog,
                f"apptainer: {fake}\nbinds: [/scratch, '/data/$(touch x):/data:ro']\n")
    write_modules(dest)
    done = run(dest / "wrappers/hello/1.0/bin/hello", "a b", "$HOME", "")
    sif = layout.sif_path(dest, catalog["images"][0], HERE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == [
        "exec", "--bind", "/scratch", "--bind", "/data/$(touch x):/data:ro", str(sif), "hello",
        "a b", "$HOME", ""]
    gpu = run(dest / "wrappers/gpu-hello/1.0/bin/hello").stdout.split("\n")
    assert gpu[:2] == ["exec", "--nv"]
    assert not (dest / "x").exists() and not Path("x").exists()


@needs_known_machine
def test_the_tree_still_works_where_it_is_moved_to_and_through_a_symlink(tmp_path):
    fake = fake_apptainer(tmp_path)
    catalog = {"images": [image()]}
    dest = site(tmp_path, catalog, f"apptainer: {fake}\n")
    write_modules(dest)
    moved = tmp_path / "elsewhere" / "site with space"
    moved.parent.mkdir()
    shutil.move(dest, moved)
    sif = str(layout.sif_path(moved, catalog["images"][0], HERE))
    assert sif in run(moved / "wrappers/hello/1.0/bin/hello").stdout.split("\n")
    link = tmp_path / "bin" / "hello"
    link.parent.mkdir()
    link.symlink_to(moved / "wrappers/hello/1.0/bin/hello")
    assert sif in run(link, cwd=tmp_path).stdout.split("\n")


@needs_known_machine
def test_a_wrapper_on_a_machine_the_folder_has_no_sif_for_says_so(tmp_path):
    other = next(arch for arch in entries.MACHINES if arch != HERE)
    dest = site(tmp_path, {"images": [image(arch=other)]})
    write_modules(dest)
    done = run(dest / "wrappers/hello/1.0/bin/hello")
    assert done.returncode == 1
    assert done.stderr == (f"hello: the site folder has no SIF of site/apps:hello-1.0 for "
                           f"{platform.machine()} (it has one for {entries.MACHINES[other]})\n")


# The module commands of Environment Modules, printing what the modulefile asks of them.
TCL_HARNESS = r"""
fconfigure stdout -encoding utf-8
fconfigure stderr -encoding utf-8
proc module-whatis {text} { puts "whatis $text" }
proc conflict {args} { puts "conflict [join $args]" }
proc prepend-path {var value} { puts "prepend-path $var $value" }
proc setenv {var value} { puts "setenv $var $value" }
proc module-info {what args} { return 1 }
set ModulesCurrentModulefile [lindex $argv 0]
source $ModulesCurrentModulefile
ModulesHelp
"""


@needs_known_machine
@pytest.mark.skipif(shutil.which("tclsh") is None, reason="no tclsh on this machine to read "
                    "the Tcl modulefile with (Debian: apt-get install tcl)")
def test_catalogue_text_stays_text_in_a_tcl_module(tmp_path):
    traps = tmp_path / "traps"
    traps.mkdir()
    description = HOSTILE.format(dir=traps)
    dest = site(tmp_path, {"images": [image(description=description + "\nsecond\tline")]},
                "modules: tcl\n")
    module, = write_modules(dest)
    harness = tmp_path / "harness.tcl"
    harness.write_text(TCL_HARNESS)
    done = subprocess.run(["tclsh", str(harness), str(module)], capture_output=True,
                          check=False, timeout=30)
    out, help_text = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, help_text
    assert f"whatis Description: {description} second line\n" in out
    assert f"hello/1.0: {description} second line\n" in help_text
    sif = layout.sif_path(dest, image(), HERE)
    assert f"setenv HELLO_SIF {sif}\n" in out
    assert f"  SIF       {sif}\n" in help_text
    assert f"prepend-path PATH {dest}/wrappers/hello/1.0/bin\n" in out
    assert list(traps.iterdir()) == []


LUA = next((c for c in ("lua5.4", "lua5.3", "lua5.1", "lua") if shutil.which(c)), None)
# Lmod's functions, printing what the modulefile asks of them.
LUA_HARNESS = r"""
local file = arg[1]
function myFileName() return file end
function capture(cmd) local p = io.popen(cmd); local s = p:read("*a"); p:close(); return s end
function pathJoin(a, b) return a .. "/" .. b end
function mode() return "load" end
function LmodError(...) error(table.concat({...})) end
function whatis(s) print("whatis " .. s) end
function help(s) io.stderr:write(s .. "\n") end
function conflict(s) print("conflict " .. s) end
function prepend_path(k, v) print("prepend_path " .. k .. " " .. v) end
function setenv(k, v) print("setenv " .. k .. " " .. v) end
dofile(file)
"""


@needs_known_machine
@pytest.mark.skipif(LUA is None, reason="no Lua interpreter on this machine (Debian: apt-get "
                    "install lua5.3); Lmod reads the same text in tests/integration")
def test_catalogue_text_stays_text_in_an_lmod_module(tmp_path):
    traps = tmp_path / "traps"
    traps.mkdir()
    description = HOSTILE.format(dir=traps)
    dest = site(tmp_path, {"images": [image(description=description)]})
    module, = write_modules(dest)
    harness = tmp_path / "harness.lua"
    harness.write_text(LUA_HARNESS)
    done = subprocess.run([LUA, str(harness), str(module)], capture_output=True, check=False,
                          timeout=30)
    out, help_text = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, help_text
    assert f"whatis Description: {description}\n" in out
    assert f"hello/1.0: {description}\n" in help_text
    assert f"setenv HELLO_SIF {layout.sif_path(dest, image(), HERE)}\n" in out
    assert list(traps.iterdir()) == []


def test_the_quoting_of_each_language():
    assert lua('a"]]\\\n$(x)é') == '"a\\"]]\\\\\\n$(x)\\195\\169"'
    assert tcl('a"$x[exec y]{}\\\né') == '"a\\"\\$x\\[exec y\\]\\{\\}\\\\\\n\\u00e9"'
    assert sh("a'b $(c)") == "'a'\"'\"'b $(c)'"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="no shellcheck on this machine "
                    "(the test extra installs it: pip install -e '.[test]')")
def test_the_wrappers_are_clean_posix_sh(tmp_path):
    dest = site(tmp_path, config="binds: [/scratch, '/data/a b:/data:ro']\n")
    write_modules(dest)
    wrappers = sorted(str(p) for p in (dest / "wrappers").rglob("*") if p.is_file())
    done = subprocess.run(["shellcheck", "--shell=sh", *wrappers], capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout
