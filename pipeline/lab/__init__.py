"""The local lab: a real Docker engine, a registry, QEMU for the foreign arch, bootstrap tools.

``python -m pipeline lab up|status|down``.  ``up`` is idempotent and starts only what is not
already running; ``down`` stops only what ``up`` started (by the pids it wrote).
"""
