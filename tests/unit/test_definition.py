"""The generated definition file and the order of stages (no Apptainer needed)."""

from __future__ import annotations

from pipeline.names import sif_name
from pipeline.planning.jobs import Job
from pipeline.run.scheduler import check_stages
from pipeline.stages.definition import definition

JOB = Job(id="r/x:t@amd64", image="x", kind="base", repository="r/x", tag="t", arch="amd64",
          variables={"os": "debian12", "mpi_family": "none", "gcc": "12"}, recipe="images/x",
          needs=(), build_id="b" * 64)


def test_definition_makes_the_test_strict_and_keeps_the_recipes_script():
    text = definition(JOB, "reg/x:tag", {"org.sjtuhpc.factory.build-id": "b" * 64}, "An image",
                      "#!/bin/sh\nfalse\ntrue\n")
    test = text.split("%test\n", 1)[1].splitlines()
    assert test[0] == "    set -eu"
    assert test[1] == "    export OS=debian12 MPI_FAMILY=none GCC=12"
    assert test[2:] == ["    false", "    true"]
    assert "#!/bin/sh" not in text
    assert "MPI inside" not in text  # no MPI, no MPI help
    assert definition(JOB, "reg/x:tag", {"org.sjtuhpc.factory.build-id": "b"}, "", None).count(
        "%test") == 0
    assert sif_name(JOB.id) == "r_x_t_amd64.sif"


def test_stages_must_come_in_order():
    assert check_stages(("build",)) is None
    assert check_stages(("build", "convert", "test")) is None
    assert "in order" in check_stages(("build", "test"))
    assert "in order" in check_stages(("convert",))
