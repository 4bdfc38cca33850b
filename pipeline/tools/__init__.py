"""Adapters for the outside world: Docker, registries, Apptainer, the Sylabs library, git,
upstream OSes."""
