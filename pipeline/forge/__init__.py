"""``python -m pipeline report``: a run's summary as Markdown, posted on the forge.

One small module per behaviour:

* ``detect``: which forge this is, from the CI environment (a frozen ``ForgeContext``);
* ``summary_parts``: read the ``summary.json`` of each CI cell and merge them into one view;
* ``comment``: that view as Markdown (the sticky comment, ``report.md``, the step summary);
* ``retries``: what is worth asking the forge again, how long to wait, when to stop;
* ``posting``: the parts posted in turn, and what came of each;
* ``github_reporter`` / ``gitlab_reporter``: the commit status, the sticky comment (or
  merge request note) and, on GitHub, a check run;
* ``command``: the ``report`` subcommand.

The report reports: a failed job does not fail ``report`` (the run's own exit code fails the
pipeline).  Nothing here runs a job, plans, or asks a registry.
"""
