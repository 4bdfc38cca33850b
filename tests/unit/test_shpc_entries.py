"""The singularity-hpc entries written from the catalogue, read back with shpc itself.

shpc (singularity-hpc from PyPI, a test dependency) is what a site runs on them: its own
schema validates every file, its filesystem registry finds the entries, its container
config resolves tags, override files and GPU features the way ``shpc install`` would.
"""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.published.shpc import write_entries

shpc_schemas = pytest.importorskip("shpc.main.schemas", reason="singularity-hpc is a test "
                                   "dependency: pip install -e '.[test]'")
from shpc.main.container import ContainerConfig, SingularityContainer  # noqa: E402
from shpc.main.registry import FilesystemResult  # noqa: E402
from shpc.main.registry.filesystem import Filesystem  # noqa: E402

SAMPLE = Path(__file__).parents[1] / "data" / "catalog-sample.json"
DIGEST = "sha256:" + "e" * 64


@pytest.fixture
def catalog() -> dict:
    return json.loads(SAMPLE.read_text())


def entries(catalog: dict, out: Path) -> dict[str, dict]:
    """Write the entries; return each module (the registry path shpc names it by) and its
    container.yaml as YAML reads it."""
    write_entries(catalog, out)
    registry = out / "registry"
    return {module: yaml.safe_load((registry / module / "container.yaml").read_text())
            for _, module in Filesystem(str(registry)).iter_modules()}


def config(out: Path, module: str, tag: str) -> ContainerConfig:
    """The entry as ``shpc install module:tag`` loads it: validated, the tag chosen, the
    tag's override file applied (shpc validates again after that)."""
    result = FilesystemResult(module, str(out / "registry" / module / "container.yaml"))
    cfg = ContainerConfig(result)
    cfg.set_tag(tag)
    assert cfg.tag is not None, f"{module} has no tag {tag}"
    if cfg.overrides and tag in cfg.overrides:
        cfg.load_override_file(tag)
    return cfg


def test_every_file_is_valid_for_shpc_and_found_in_its_registry(catalog, tmp_path):
    written = write_entries(catalog, tmp_path)
    registry = tmp_path / "registry"
    modules = sorted(m for _, m in Filesystem(str(registry)).iter_modules())
    assert modules == ["sjtuhpc/hpc-app-container", "sjtuhpc/hpc-app-container-sif",
                       "sjtuhpc/hpc-base-container", "sjtuhpc/hpc-base-container-sif"]
    assert sorted(p for p in registry.rglob("*") if p.is_file()) == sorted(written)
    for path in written:
        if path.name == "container.yaml":
            jsonschema.validate(yaml.safe_load(path.read_text()), shpc_schemas.containerConfig)
    for module in modules:
        entry = yaml.safe_load((registry / module / "container.yaml").read_text())
        for tag in entry["tags"]:
            config(tmp_path, module, tag)    # validates each tag's view (its overrides too)


def test_tags_map_to_the_digests_shpc_pulls_by(catalog, tmp_path):
    found = entries(catalog, tmp_path)
    app, base = found["sjtuhpc/hpc-app-container"], found["sjtuhpc/hpc-base-container"]
    # shpc pulls docker://<docker>@<digest>: the multi-arch list, the host's platform in it.
    assert app["docker"] == "127.0.0.1:5000/sjtuhpc/hpc-app-container"
    assert app["tags"] == {"lammps-gnu-2022": "sha256:" + "1" * 64}   # pi-mpi: SIF only
    assert base["tags"] == {"gcc-11.cuda-11.8.ompi-4.1": "sha256:aaaa" + "1" * 60,
                            "ompi-4.1": "sha256:bbbb" + "1" * 60}
    assert app["url"] == "https://github.com/sjtuhpc/hpc-container-factory"
    # SIFs, per architecture, by the SIF's manifest digest: oras://<oras>@<digest>.
    sifs = found["sjtuhpc/hpc-app-container-sif"]
    assert sifs["oras"] == "127.0.0.1:5000/sjtuhpc/hpc-app-container-sif"
    assert sifs["tags"] == {"lammps-gnu-2022-amd64": "sha256:" + "4" * 64,
                            "pi-mpi-1.0-amd64": "sha256:" + "8" * 64}   # no arm64 SIF: none
    assert "docker" not in sifs
    for entry in found.values():
        (latest, digest), = entry["latest"].items()
        assert entry["tags"][latest] == digest


def test_aliases_and_gpu_feature_per_tag(catalog, tmp_path):
    write_entries(catalog, tmp_path)
    singularity = SingularityContainer()
    site = {"gpu": "nvidia"}          # a site's shpc settings: container_features
    cases = [("sjtuhpc/hpc-app-container", "lammps-gnu-2022", ["lmp"], {}),
             ("sjtuhpc/hpc-base-container", "ompi-4.1", ["mpicc", "mpirun"], {}),
             ("sjtuhpc/hpc-base-container", "gcc-11.cuda-11.8.ompi-4.1",
              ["nvcc", "mpicc", "mpirun"], {"gpu": "--nv"}),
             ("sjtuhpc/hpc-app-container-sif", "pi-mpi-1.0-amd64", ["pi-mpi"], {}),
             ("sjtuhpc/hpc-app-container-sif", "lammps-gnu-2022-amd64", ["lmp"], {}),
             ("sjtuhpc/hpc-base-container-sif", "gcc-11.cuda-11.8.ompi-4.1-amd64",
              ["nvcc", "mpicc", "mpirun"], {"gpu": "--nv"})]
    for module, tag, commands, features in cases:
        cfg = config(tmp_path, module, tag)
        aliases = cfg.get_aliases()
        assert [a["name"] for a in aliases] == commands, (module, tag)
        assert [a["command"] for a in aliases] == commands      # found on the image's PATH
        assert singularity.get_features(cfg.features, site) == features, (module, tag)


def test_a_command_given_as_a_path_is_aliased_by_its_name(catalog, tmp_path):
    catalog["images"][0]["commands"] = ["/usr/bin/lmp", "gmx_mpi"]
    write_entries(catalog, tmp_path)
    cfg = config(tmp_path, "sjtuhpc/hpc-app-container", "lammps-gnu-2022")
    assert {a["name"]: a["command"] for a in cfg.get_aliases()} == {
        "lmp": "/usr/bin/lmp", "gmx_mpi": "gmx_mpi"}


def test_docker_hub_images_are_named_without_the_host(catalog, tmp_path):
    catalog["target"] = {"name": "production", "registry": "docker.io"}
    found = entries(catalog, tmp_path)
    assert found["sjtuhpc/hpc-app-container"]["docker"] == "sjtuhpc/hpc-app-container"
    # Apptainer's oras:// wants a host, Docker Hub's too.
    assert found["sjtuhpc/hpc-app-container-sif"]["oras"] == \
        "docker.io/sjtuhpc/hpc-app-container-sif"


def test_untrusted_text_cannot_reach_a_modulefile_as_code(catalog, tmp_path):
    """shpc pastes description and aliases into Lua/Tcl modulefiles unquoted."""
    lammps = catalog["images"][0]
    lammps["description"] = 'LAMMPS") os.execute("id") --[[ $(id) ]] {x}\nline two\\'
    lammps["commands"] = ["lmp", "lmp; id", "../../bin/sh", "$(id)", "a b"]
    bad = copy.deepcopy(lammps)
    bad["tag"] = "../../etc"
    bad["digest"] = DIGEST
    catalog["images"].append(bad)
    found = entries(catalog, tmp_path)
    app = found["sjtuhpc/hpc-app-container"]
    assert app["description"] == "LAMMPS') os.execute('id') -- (id) x line two"
    assert app["aliases"] == {"lmp": "lmp"}
    assert list(app["tags"]) == ["lammps-gnu-2022"]
    assert not (tmp_path / "etc").exists()


def test_a_gpu_tag_beside_cpu_tags_gets_its_own_features(catalog, tmp_path):
    """The entry's own keys are those of ``latest``; when that is the CUDA tag, the CPU tag
    must override ``features`` with nothing (shpc adds --nv for any gpu key)."""
    for image in catalog["images"]:
        if image["tag"] == "gcc-11.cuda-11.8.ompi-4.1":
            image["created"] = "2026-12-01T00:00:00Z"
    found = entries(catalog, tmp_path)
    assert found["sjtuhpc/hpc-base-container"]["latest"] == {
        "gcc-11.cuda-11.8.ompi-4.1": "sha256:aaaa" + "1" * 60}
    assert found["sjtuhpc/hpc-base-container"]["features"] == {"gpu": True}
    singularity = SingularityContainer()
    cpu = config(tmp_path, "sjtuhpc/hpc-base-container", "ompi-4.1")
    assert singularity.get_features(cpu.features, {"gpu": "nvidia"}) == {}
    assert [a["name"] for a in cpu.get_aliases()] == ["mpicc", "mpirun"]


def test_a_tag_that_is_gone_leaves_no_entry_behind(catalog, tmp_path):
    write_entries(catalog, tmp_path)
    registry = tmp_path / "registry"
    assert (registry / "sjtuhpc/hpc-base-container/gcc-11.cuda-11.8.ompi-4.1.yml").is_file()
    catalog["images"] = [i for i in catalog["images"]
                         if i["repository"] == "sjtuhpc/hpc-app-container"
                         and i["tag"] == "lammps-gnu-2022"]
    written = write_entries(catalog, tmp_path)
    assert sorted(p for p in registry.rglob("*") if p.is_file()) == sorted(written)
    assert sorted(m for _, m in Filesystem(str(registry)).iter_modules()) == [
        "sjtuhpc/hpc-app-container", "sjtuhpc/hpc-app-container-sif"]


def test_the_same_catalogue_gives_the_same_files(catalog, tmp_path):
    first = {p.relative_to(tmp_path / "a"): p.read_bytes()
             for p in write_entries(catalog, tmp_path / "a")}
    catalog["images"].reverse()
    second = {p.relative_to(tmp_path / "b"): p.read_bytes()
              for p in write_entries(catalog, tmp_path / "b")}
    assert first == second
