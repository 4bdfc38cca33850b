"""The tests the test stage runs on a SIF, one per module behind one small interface.

Each module has ``check(job, sif, ctx, work, log) -> TestResult`` and never raises for a
failing test: it returns ``failed`` with the reason, or ``skipped`` with why it did not run.
"""
