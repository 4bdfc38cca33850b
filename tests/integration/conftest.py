"""Settings shared by the integration tests.

The build cache (BuildKit's registry cache, through the factory's docker-container builder)
costs every build an image export into the engine and a cache export to staging.  The
tests about other things (convert, publish, trust, interrupts, ...) build with the engine's
own BuildKit instead, as a site may (``PIPELINE_BUILD_CACHE=off``), which keeps the suite
within its time.  The cache path itself is what ``test_build_cache.py`` tests, and
``test_gitlab_ci_local.py`` runs every cell of a real pipeline with it (both drop this
setting from their runs' environment, so the default, ``registry``, applies).
"""

import os

import pytest

from tests.integration.apps_run import run_apps

os.environ.setdefault("PIPELINE_BUILD_CACHE", "off")


@pytest.fixture(scope="session")
def apps_run(tmp_path_factory):
    """The pipeline run shared by the app, catalogue and cluster tests (apps_run.py)."""
    return run_apps(tmp_path_factory.mktemp("apps"))
