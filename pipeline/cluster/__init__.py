"""The cluster side: what a site does with the published catalogue.

``python -m pipeline cluster pull|bundle|import|modules``: SIFs mirrored by digest and
verified onto a shared filesystem (or carried in a tar to a site with no registry access),
and modulefiles (Lmod and Environment Modules) with wrapper commands that call
``apptainer exec``.
"""
