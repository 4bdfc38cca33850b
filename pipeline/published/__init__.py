"""What the target registry holds, as a catalogue for the clusters that consume it.

``python -m pipeline catalog`` reads the target registry (the truth, not local files) and
writes ``catalog.json`` (+ ``.sha256``), ``index.html`` and singularity-hpc entries; ``run``
in main/nightly mode regenerates them after publishing and pushes ``catalog.json`` to the
registry as an OCI artifact.
"""
