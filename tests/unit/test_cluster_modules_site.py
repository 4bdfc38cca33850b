"""The site's settings (``DIR/site.yaml``) and a slice the modules cannot be written from:
every problem is one ``FILE[:LINE]: message`` line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cluster import layout, site_config
from pipeline.cluster.modules import write_modules
from pipeline.cluster.site_config import SiteConfig
from pipeline.errors import EXIT_BAD_INPUT, InputError

SAMPLE = (Path(__file__).parents[1] / "data/catalog-sample.json").read_text()


def problems(dest: Path, text: str) -> list[str]:
    (dest / layout.SITE).write_text(text)
    with pytest.raises(InputError) as caught:
        site_config.load(dest)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return str(caught.value).splitlines()


def test_a_missing_site_yaml_is_written_with_the_defaults_and_never_overwritten(tmp_path):
    assert site_config.load(tmp_path) == SiteConfig()
    text = (tmp_path / layout.SITE).read_text()
    assert "binds: []" in text and "modules: lmod" in text and "apptainer: apptainer" in text
    assert "# module_prefix: containers/" in text
    (tmp_path / layout.SITE).write_text(text.replace("binds: []", "binds: [/scratch]"))
    assert site_config.load(tmp_path).binds == ("/scratch",)
    assert "binds: [/scratch]" in (tmp_path / layout.SITE).read_text()


def test_every_setting_is_read():
    config = site_config.parse("binds:\n  - /scratch\n  - /data/shared:/data:ro\n"
                               "modules: tcl\napptainer: /opt/apptainer/bin/singularity\n"
                               "module_prefix: containers/hpc/\n", "site.yaml")
    assert config == SiteConfig(("/scratch", "/data/shared:/data:ro"), "tcl",
                                "/opt/apptainer/bin/singularity", "containers/hpc")


def test_each_bad_setting_is_named_with_its_line(tmp_path):
    file = tmp_path / layout.SITE
    assert problems(tmp_path, "binds:\n  - /scratch\n  - scratch\n  - /a,/b\n  - /a:/b:rx\n"
                              "  - /a:/b:ro:x\n  - [x]\nmodules: slurm\napptainer: apptainer -s\n"
                              "module_prefix: ../up\nbind: [/x]\n") == [
        f"{file}:3: bind 'scratch': SRC and DST must be absolute paths, e.g. /scratch",
        f"{file}:4: bind '/a,/b' must be SRC[:DST[:ro|rw]] with no comma (apptainer splits "
        "--bind at commas)",
        f"{file}:5: bind '/a:/b:rx': the options after the second ':' must be ro or rw",
        f"{file}:6: bind '/a:/b:ro:x' must be SRC[:DST[:ro|rw]] with no comma (apptainer "
        "splits --bind at commas)",
        f"{file}:7: a bind must be a path, SRC[:DST[:ro|rw]], not ['x']",
        f"{file}:8: modules must be lmod or tcl, not 'slurm'",
        f"{file}:9: apptainer must be one command without options: apptainer, singularity or "
        "a path, not 'apptainer -s'",
        f"{file}:10: module_prefix must be folder names of letters, digits and ._+- separated "
        "by /, e.g. containers/, not '../up'",
        f"{file}:11: unknown setting 'bind'; the settings are binds, modules, apptainer, "
        "module_prefix"]


def test_yaml_that_is_no_mapping_or_no_yaml(tmp_path):
    file = tmp_path / layout.SITE
    assert problems(tmp_path, "- /scratch\n") == [
        f"{file}:1: site.yaml must be a mapping of settings (binds, modules, apptainer, "
        "module_prefix)"]
    assert problems(tmp_path, "binds: /scratch\n") == [
        f"{file}:1: binds must be a list of SRC[:DST[:ro|rw]], e.g. binds: [/scratch]"]
    assert problems(tmp_path, "binds: [/scratch\nmodules: lmod\n")[0].startswith(
        f"{file}:2: YAML syntax error")


def test_write_modules_stops_on_a_bad_site_yaml_before_writing(tmp_path):
    (tmp_path / layout.CATALOG).write_text(SAMPLE)
    (tmp_path / layout.SITE).write_text("modules: lua\n")
    with pytest.raises(InputError, match=r"site.yaml:1: modules must be lmod or tcl"):
        write_modules(tmp_path)
    assert not (tmp_path / layout.MODULES).exists()


def test_no_catalogue_says_to_pull_first(tmp_path):
    with pytest.raises(InputError) as caught:
        write_modules(tmp_path)
    assert str(caught.value) == (f"{tmp_path / layout.CATALOG}: not found; run `python -m "
                                 f"pipeline cluster pull --dest {tmp_path}` (or `cluster "
                                 "import`) first")
    (tmp_path / layout.CATALOG).write_text("{")
    with pytest.raises(InputError, match=r"catalog\.json: cannot be read as JSON"):
        write_modules(tmp_path)


def test_names_that_would_leave_the_site_folder_are_refused(tmp_path):
    catalog = json.loads(SAMPLE)
    lammps, pi = catalog["images"][0], catalog["images"][1]
    lammps["module"] = "../../etc/profile.d/x"
    lammps["commands"] = ["lmp", "../../../../bin/sh"]
    pi["tag"] = "../x"
    catalog["images"][3]["module"] = "hpc-base-container/gcc-11.cuda-11.8.ompi-4.1"  # twice
    (tmp_path / layout.CATALOG).write_text(json.dumps(catalog))
    with pytest.raises(InputError) as caught:
        write_modules(tmp_path)
    file = tmp_path / layout.CATALOG
    assert str(caught.value).splitlines() == [
        f"{file}: image sjtuhpc/hpc-app-container:lammps-gnu-2022: its module "
        "../../etc/profile.d/x is not NAME/VERSION of letters, digits and ._+-; its "
        'commands ["lmp", "../../../../bin/sh"] are not plain command names',
        f"{file}: image sjtuhpc/hpc-app-container:../x: its tag is not a tag",
        f"{file}: sjtuhpc/hpc-base-container:ompi-4.1 and "
        "sjtuhpc/hpc-base-container:gcc-11.cuda-11.8.ompi-4.1 are both module "
        "hpc-base-container/gcc-11.cuda-11.8.ompi-4.1; keep one of them in the slice"]
    assert not (tmp_path / layout.MODULES).exists()
