# Sourced by every job of the GitLab pipelines (`before_script: . .ci/gitlab-env.sh`), in
# the project folder: the factory's environment for `python -m pipeline`.
#
# * A virtualenv with the dependencies of pyproject.toml, shared by the jobs of a runner:
#   one per pyproject.toml and Python version under FACTORY_VENVS (default
#   ~/.cache/hpc-factory/venvs), made once under a lock (`pip install .` takes about a
#   minute; a shell runner's jobs would each pay it).  The project itself is uninstalled
#   from it again: the job runs the checkout's own code, from PYTHONPATH, so every job
#   runs exactly its commit's code, whatever other pipelines share the virtualenv.
#   Virtualenvs no job has used for 14 days are removed when a new one is made.
# * pr mode (merge requests): the trusted credentials are dropped, and the pr staging
#   login, PIPELINE_PR_STAGING_USERNAME/PASSWORD, becomes the staging login the factory
#   reads (PIPELINE_STAGING_USERNAME/PASSWORD).  What actually keeps the trusted values
#   from merge requests is GitLab's "protected" flag on those variables: a merge request
#   can change this file.
#
# Needs python3 (3.10 or later) with venv (Debian: python3-venv), and flock.

factory_python=${FACTORY_PYTHON:-python3}
factory_venvs=${FACTORY_VENVS:-${HOME:-/tmp}/.cache/hpc-factory/venvs}
factory_key=$({ cat pyproject.toml; "$factory_python" -c 'import sys; print(sys.version)'; } |
  sha256sum | cut -c1-16)
factory_venv=$factory_venvs/$factory_key
if [ ! -e "$factory_venv/.complete" ]; then
  mkdir -p "$factory_venvs"
  (
    flock 9
    if [ ! -e "$factory_venv/.complete" ]; then
      echo "gitlab-env: making the virtualenv $factory_venv (pyproject.toml changed)"
      rm -rf "$factory_venv"
      "$factory_python" -m venv "$factory_venv"
      "$factory_venv/bin/python" -m pip install --quiet --disable-pip-version-check .
      "$factory_venv/bin/python" -m pip uninstall --quiet --yes hpc-container-factory
      touch "$factory_venv/.complete"
      find "$factory_venvs" -mindepth 2 -maxdepth 2 -name .complete -mtime +14 |
        while read -r unused; do rm -rf "$(dirname "$unused")"; done
    fi
  ) 9>"$factory_venvs/$factory_key.lock"
fi
touch "$factory_venv/.complete"  # used: kept
# shellcheck disable=SC1091  # made above
. "$factory_venv/bin/activate"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "${MODE:-}" = pr ]; then
  unset PIPELINE_STAGING PIPELINE_STAGING_KEY PIPELINE_REGISTRY_USERNAME \
    PIPELINE_REGISTRY_PASSWORD PIPELINE_LIBRARY_TOKEN PIPELINE_SIGNING_KEY \
    PIPELINE_SIGNING_PASSPHRASE PIPELINE_STAGING_USERNAME PIPELINE_STAGING_PASSWORD
  if [ -n "${PIPELINE_PR_STAGING_USERNAME:-}" ]; then
    export PIPELINE_STAGING_USERNAME="$PIPELINE_PR_STAGING_USERNAME"
    export PIPELINE_STAGING_PASSWORD="${PIPELINE_PR_STAGING_PASSWORD:-}"
  fi
fi
unset factory_python factory_venvs factory_key factory_venv
echo "gitlab-env: $(python --version), the factory from $PWD, mode ${MODE:-unset}"
