"""``python -m pipeline catalog``: what the target registry holds, as a catalogue.

    python -m pipeline catalog [--matrix FILE] [--target NAME] [--out DIR] [--push]

Reads every published tag of matrix.yaml's repositories from the target's registry (the
truth: nothing local) and writes ``DIR/catalog.json`` + ``catalog.json.sha256``,
``index.html`` and the singularity-hpc entries (default ``DIR``: ``out/site/``, under
``PIPELINE_OUT_DIR`` when set); ``--push`` also pushes ``catalog.json`` to
``<registry>/<namespace>/catalog:latest`` and its immutable tag.  The lab registry (the
``local`` target) is read with the lab's login, another with ``PIPELINE_REGISTRY_USERNAME``
and ``PIPELINE_REGISTRY_PASSWORD`` (or anonymously without them).

Exit codes: 0 written (and pushed); 1 the registry refused the login, or a push; 2 bad
input (matrix.yaml, the target, repositories in several namespaces,
``PIPELINE_SIGNING_PUBLIC_KEY``); 4 the registry could not be reached after the retries;
3 anything else (the command line's rules).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.catalogue.validation import load_catalogue
from pipeline.errors import EXIT_JOB_FAILED, EXIT_PASSED
from pipeline.planning.planner import target_of
from pipeline.planning.recipe_files import WorkTree
from pipeline.published.catalog import Scope
from pipeline.published.site import FOLDER, make_site
from pipeline.settings import Settings
from pipeline.tools.credentials import Masker, Secrets
from pipeline.tools.registry.client import Registry, RegistryAuthError
from pipeline.tools.registry.staging import target_credentials


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``catalog`` on the command line's subparsers."""
    parser = subparsers.add_parser(
        "catalog", help="read what the target registry holds into catalog.json, index.html "
        "and singularity-hpc entries (and push catalog.json with --push)")
    parser.add_argument("--matrix", default="matrix.yaml", help="catalogue file (matrix.yaml)")
    parser.add_argument("--target", help="the target to read, a target of matrix.yaml "
                        "(default: its default_target)")
    parser.add_argument("--out", help=f"output folder (default: out/{FOLDER}/, under "
                        "PIPELINE_OUT_DIR when set)")
    parser.add_argument("--push", action="store_true",
                        help="also push catalog.json to <registry>/<namespace>/catalog")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, masker: Masker | None = None, interruption=None) -> int:
    """The command; InputError (exit 2) and an unreachable registry (exit 4) go up to the
    command line, which prints them."""
    secrets = Secrets.from_env()
    masker = masker or secrets.masker()
    settings = Settings.from_env(Path.cwd())
    matrix = Path(args.matrix)
    catalogue = load_catalogue(WorkTree(matrix.resolve().parent), matrix.name,
                               display=str(matrix))
    target = target_of(catalogue, args.target, settings)
    scope = Scope.of(catalogue, target)
    registry = Registry(target.registry, target_credentials(
        secrets.registry, target.registry, settings.lab_dir, settings.registry))
    masker.add(registry.credentials.password)
    out = Path(args.out) if args.out else settings.out_dir / FOLDER
    try:
        make_site(registry, scope, out, push=args.push,
                  log=lambda line: print(masker(line), flush=True))
    except RegistryAuthError as err:  # the message names the variables to set
        print(masker(f"catalog: {err}"), file=sys.stderr)
        return EXIT_JOB_FAILED
    return EXIT_PASSED
