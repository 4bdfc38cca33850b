"""The ``workload: `` summary lines of a recipe's test.sh become the %test result's reason."""

from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from pipeline.run.summary import print_summary
from pipeline.stages.checks.percent_test import MAX_CHARS, MAX_LINES, reason, workload_lines

LAMMPS = "workload: lammps melt: 2 ranks, 250 steps, energy -2.2812 (ref -2.281 +- 0.01), 3 s"
OUTPUT = f"""INFO:    Running %test script
LAMMPS (23 Jun 2022 - Update 1)
  1 by 1 by 2 MPI processor grid
{LAMMPS}
"""


def test_the_workload_lines_are_found_in_order_and_stripped():
    other = "workload: second run: 2 ranks"
    text = f"{OUTPUT}  {other}  \nnot a workload: line\nworkloads: no\n"
    assert workload_lines(text) == [LAMMPS, other]


def test_output_without_workload_lines_gives_none():
    assert workload_lines("lmp -h\nINFO: fine\n") == []
    assert reason(0, "lmp -h\n") == ""


def test_a_passed_test_reason_is_its_workload_lines():
    assert reason(0, OUTPUT + "workload: b\n") == f"{LAMMPS}; workload: b"


def test_a_failed_test_reason_names_the_exit_the_failure_line_and_the_rest_of_the_output():
    failed = ("workload: lammps melt: FAILED: expected 1 run on 2 procs, got 2 run(s) on 1 "
              "procs")
    text = f"Loop time of 2.2 on 1 procs\n{failed}\nLoop time of 2.3 on 1 procs\n"
    text_reason = reason(1, text)
    assert text_reason.startswith(f"exit 1; {failed}: ")
    assert text_reason.count("FAILED") == 1  # not repeated in the tail
    assert text_reason.endswith("Loop time of 2.2 on 1 procs | Loop time of 2.3 on 1 procs")


def test_a_failure_without_workload_lines_reads_as_before():
    assert reason(2, "INFO: x\nboom\n") == "exit 2: boom"


def test_a_flood_of_lines_is_cut():
    text = "\n".join(f"workload: {n} " + "x" * 1000 for n in range(100))
    lines = workload_lines(text)
    assert len(lines) == MAX_LINES
    assert lines[0].startswith("workload: 0 ")
    assert lines[-1].startswith(f"workload: {MAX_LINES - 1} ")
    assert all(len(line) == MAX_CHARS and line.endswith("...") for line in lines)


def _table(outcome) -> str:
    console = Console(record=True, width=300)
    print_summary([outcome], console, Path("out/summary.json"), None, mask=lambda s: s)
    return console.export_text()


def _outcome(result: str, test_reason: str) -> SimpleNamespace:
    tests = [{"name": "%test", "result": result, "reason": test_reason},
             {"name": "mpi", "result": "passed", "reason": "4 ranks, each once"}]
    return SimpleNamespace(job=SimpleNamespace(id="t/app:lammps@amd64", arch="amd64"),
                           result=result, duration=1.0, built=None,
                           stages={"test": {"tests": tests}},
                           reason="built; converted; %test passed, mpi passed")


def test_the_run_table_shows_the_workload_line_of_a_passed_job():
    text = _table(_outcome("passed", LAMMPS))
    assert "built; converted; %test passed, mpi passed" in text
    assert LAMMPS in text
    assert "4 ranks, each once" not in text  # only %test's reason is added


def test_the_run_table_adds_nothing_for_a_passed_job_without_workload_lines():
    assert _table(_outcome("passed", "")).count("t/app:lammps") == 1
