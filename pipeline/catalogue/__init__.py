"""The catalogue: matrix.yaml read, checked and turned into frozen dataclasses (no I/O but reading files)."""
