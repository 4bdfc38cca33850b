"""The catalogue: matrix.yaml read, checked and turned into frozen dataclasses.

No I/O but reading files."""
