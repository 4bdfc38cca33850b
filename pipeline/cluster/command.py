"""``python -m pipeline cluster``: the published SIFs mirrored onto a site, and its modules.

    python -m pipeline cluster pull    --catalog REF|FILE|URL --dest DIR [--select GLOBS]
                                       [--arch A[,B]] [--system lmod|tcl]
    python -m pipeline cluster bundle  --catalog REF|FILE|URL --out FILE.tar
                                       [--select GLOBS] [--arch A[,B]]
    python -m pipeline cluster import  FILE.tar --dest DIR [--system lmod|tcl]
    python -m pipeline cluster modules --dest DIR [--system lmod|tcl]

``pull`` brings the selected SIFs into ``DIR`` by digest, each checked (``mirror.py``),
writes ``DIR/catalog.json`` (what is on the site) and the modules.  ``bundle`` pulls the
same way into a staging folder beside ``FILE.tar`` (kept when something fails, so a rerun
resumes) and writes the tar only when no download failed; ``import`` checks a bundle
whole before it places anything (``bundle.py``).  ``modules`` writes the modulefiles and
wrappers of ``DIR/catalog.json`` again (after ``site.yaml`` changed).

Exit codes: 0 every selected SIF is in place; 1 one is not (failed, refused, or not
published for the arch; the others went on), or another pull or import is writing the
folder; 2 bad input (a catalogue of another schema or with unsafe names, a glob matching
nothing, a bundle with a changed byte or a name leading outside: nothing imported); 4 the
registry or the catalogue's URL stayed unreachable after the retries, or a signed SIF needs
Apptainer and there is none.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.cluster import bundle, slices, source
from pipeline.cluster.access import Access
from pipeline.cluster.layout import MODULES
from pipeline.cluster.lock import site_lock
from pipeline.cluster.mirror import FAILED, NOT_TRIED, REFUSED, Mirror, Outcome, Row, pull
from pipeline.cluster.progress import Bars
from pipeline.cluster.selection import globs_of, parse_arches, select
from pipeline.cluster.signatures import Verifier
from pipeline.cluster.site_config import SYSTEMS
from pipeline.console import make_console
from pipeline.errors import EXIT_JOB_FAILED, EXIT_PASSED, InfrastructureUnreachable
from pipeline.settings import Settings
from pipeline.tools.credentials import Masker

REASON = 60  # characters of a problem in the table; the whole of it follows the table


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cluster`` and its subcommands on the command line's subparsers."""
    parser = subparsers.add_parser(
        "cluster", help="mirror published SIFs onto a cluster's shared folder (verified, "
        "by digest), carry them in a bundle, write modulefiles")
    commands = parser.add_subparsers(dest="cluster_command", required=True)
    pull_parser = commands.add_parser(
        "pull", help="download the selected SIFs into DIR by digest, checked; write "
        "DIR/catalog.json and the modules")
    _catalog_arguments(pull_parser)
    _dest_argument(pull_parser)
    bundle_parser = commands.add_parser(
        "bundle", help="the selected SIFs, their catalogue slice and key in one tar, for "
        "a site that cannot reach the registry")
    _catalog_arguments(bundle_parser)
    bundle_parser.add_argument("--out", required=True, metavar="FILE.tar",
                               help="the bundle to write")
    import_parser = commands.add_parser(
        "import", help="check a bundle whole, then place its SIFs in DIR and add its "
        "slice to DIR/catalog.json")
    import_parser.add_argument("bundle", metavar="FILE.tar", help="a tar from `cluster bundle`")
    _dest_argument(import_parser)
    modules_parser = commands.add_parser(
        "modules", help="write the modulefiles and wrappers of DIR/catalog.json again")
    _dest_argument(modules_parser)
    parser.set_defaults(func=run)
    return parser


def _catalog_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", required=True, metavar="REF|FILE|URL",
                        help="the published catalog.json: a file, an http(s) URL, or its OCI "
                        "reference (HOST/NAMESPACE/catalog:latest)")
    parser.add_argument("--select", metavar="GLOBS",
                        help="comma-separated fnmatch globs over repository:tag (default: "
                        "every tag)")
    parser.add_argument("--arch", metavar="A[,B]",
                        help="the arches to bring (default: this machine's)")


def _dest_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", required=True, metavar="DIR",
                        help="the site folder (containers/, modules/, catalog.json, site.yaml)")
    parser.add_argument("--system", choices=SYSTEMS,
                        help="the module system to write for (default: site.yaml's, lmod)")


def run(args: argparse.Namespace, masker: Masker | None = None, interruption=None) -> int:
    console = make_console(mask=masker or Masker.from_env())
    settings = Settings.from_env(Path.cwd())
    action = {"pull": _pull, "bundle": _bundle, "import": _import,
              "modules": _modules_command}[args.cluster_command]
    try:
        return action(args, settings, console)
    except source.CatalogUnreachable as err:
        raise InfrastructureUnreachable(str(err)) from None


def _pull(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    access = Access.from_env(settings)
    catalog, _ = source.read(args.catalog, access, log=console.print)
    wanted = select(catalog, globs_of(args.select), parse_arches(args.arch))
    dest = Path(args.dest).resolve()
    with site_lock(dest):
        site = slices.read_site(dest)
        outcome = _mirror(catalog, wanted, dest, access, settings, console)
        present = slices.present(catalog, outcome.kept())
        if site is not None or present["images"]:
            merged = slices.merge(site, present, dest)
            console.print(f"wrote {slices.write(dest, merged)}")
            if merged["images"]:
                _modules(dest, args.system, console)
    _table(console, outcome.rows, dest)
    return outcome.exit_code()


def _bundle(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    access = Access.from_env(settings)
    catalog, _ = source.read(args.catalog, access, log=console.print)
    wanted = select(catalog, globs_of(args.select), parse_arches(args.arch))
    out = Path(args.out).resolve()
    staging = out.with_name(f".{out.name}.staging")
    with site_lock(staging):
        outcome = _mirror(catalog, wanted, staging, access, settings, console)
        failed = [row for row in outcome.rows if row.result in (FAILED, REFUSED, NOT_TRIED)]
        present = slices.present(catalog, outcome.kept())
        if not failed and present["images"]:
            bundle.write(out, staging, present)
    _table(console, outcome.rows, staging)
    if failed or not present["images"]:
        console.print(f"no bundle written: {len(failed)} SIF(s) could not be downloaded; the "
                      f"ones that were are kept in {staging} for the next try"
                      if failed else "no bundle written: no selected SIF is published")
        return outcome.exit_code() or EXIT_JOB_FAILED
    shutil.rmtree(staging)
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB): "
                  f"{len(outcome.kept())} tag(s); check it with `python -m pipeline cluster "
                  f"import {out.name} --dest DIR` on the site")
    return outcome.exit_code()


def _import(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    dest = Path(args.dest).resolve()
    verifier = Verifier(settings)
    with site_lock(dest):
        site = slices.read_site(dest)
        slice_, rows = bundle.import_bundle(Path(args.bundle), dest, verifier)
        merged = slices.merge(site, slice_, dest)
        console.print(f"wrote {slices.write(dest, merged)}")
        if merged["images"]:
            _modules(dest, args.system, console)
    _table(console, rows, dest)
    return EXIT_PASSED


def _modules_command(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    dest = Path(args.dest).resolve()
    with site_lock(dest):
        _modules(dest, args.system, console)
    return EXIT_PASSED


def _mirror(catalog: dict, wanted: list, dest: Path, access: Access, settings: Settings,
            console: Console) -> Outcome:
    with Bars(console) as bars:
        return pull(catalog, wanted, Mirror(dest, access, Verifier(settings), bars,
                                            console.print))


def _modules(dest: Path, system: str | None, console: Console) -> list[Path]:
    # Imported here: the modules package is the heavier half and only these commands use it.
    from pipeline.cluster.modules import write_modules  # noqa: PLC0415
    written = write_modules(dest, system)
    console.print(f"wrote {len(written)} modulefile(s) under {dest / MODULES}")
    return written


def _table(console: Console, rows: list[Row], dest: Path) -> None:
    """The table of every row; then each problem in full, one line each (for cron mails
    and grep: a table cell folds a long reason)."""
    table = Table(title=f"SIFs in {dest}", title_justify="left")
    for column in ("tag", "arch", "result", "path, or why not"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if row.ok:
            where = str(row.path.relative_to(dest)) if row.path else ""
            detail = "; ".join(filter(None, [where, row.reason]))
        else:
            detail = row.reason if len(row.reason) <= REASON else row.reason[:REASON - 1] + "…"
        table.add_row(f"{row.repository}:{row.tag}", row.arch, row.result, detail,
                      style="" if row.ok else "red")
    console.print(table)
    for row in rows:
        if not row.ok:
            console.print(f"{row.repository}:{row.tag} {row.arch}: {row.result}: {row.reason}",
                          soft_wrap=True)
