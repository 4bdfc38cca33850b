"""``lab up|status|down``: bring up, report and stop the local lab.

``--with cluster`` (``extras``) adds the lab's one-node Slurm cluster (``slurm.py``); without
it, nothing of the cluster is made.  ``status`` and ``down`` also report and stop a cluster
``up`` recorded without being asked: what runs is shown, and ``down`` stops what ``up``
started.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.console import make_console
from pipeline.lab import (
    apptainer_image,
    cluster_image,
    engine,
    host,
    node_image,
    services,
    slurm,
)
from pipeline.lab.registries import LabRegistry, ensure_login, lab_registries
from pipeline.settings import Settings
from pipeline.tools import apptainer, buildx, docker_engine
from pipeline.tools.registry.client import Registry, RegistryAuthError, RegistryError
from pipeline.tools.registry.references import is_local
from pipeline.tools.registry.retries import LAB_RETRIES

DOCKERD_ARGS = ("dockerd", "--iptables=false", "--ip-masq=false", "--bridge=none")
EXTRAS = ("cluster",)  # what ``--with`` may add


@dataclass(frozen=True)
class LabPaths:
    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"


def up(settings: Settings, out=sys.stdout, extras: tuple = ()) -> int:
    """Bring up what is missing, and the ``extras`` asked for; 0 when everything answers, 2
    when the host cannot be set up."""
    paths = LabPaths(settings.lab_dir)
    console = make_console(out)
    needs = host.missing()
    suite = engine.newer_suite() if host.can_apt() else None
    if needs or suite:
        packages = sorted({p for n in needs for p in n.packages})
        if suite:
            console.print(f"docker engine: taking {', '.join(engine.PACKAGES)} from Debian "
                          f"{suite} (docker save writes an OCI layout from Docker "
                          f"{engine.OCI_SAVE_MAJOR} on; see pipeline/lab/engine.py)")
            packages = [p for p in packages if p not in engine.PACKAGES] + engine.add_source(
                suite, engine.host_mirror())
        if not host.can_apt():
            console.print("The lab needs: " + "; ".join(n.what for n in needs) + ".\n"
                          "This host has no apt-get or this is not root, so install them "
                          f"yourself (Debian/Ubuntu names: {' '.join(packages)}), then rerun "
                          "`python -m pipeline lab up`.")
            return 2
        console.print(f"installing with apt: {' '.join(packages)}")
        host.apt_install(packages, paths.logs / "apt.log")
    _ensure_docker(paths, console)
    _ensure_registries(settings, paths, console)
    for arch in ("amd64", "arm64"):
        if arch != host.host_arch():
            host.enable_binfmt(arch)
            console.print(f"qemu for {arch}: {host.binfmt_state(arch)}")
    client = docker_engine.find_build_client(settings)
    console.print(f"builder: {client.kind} ({client.path}, client {client.version})")
    _ensure_builder(settings, client, paths, console)
    runtime = _ensure_apptainer(settings, client, paths, console)
    node = _ensure_node(settings, client, runtime, paths, console)
    if "cluster" in extras:
        _ensure_cluster(settings, client, node, paths, console)
    return 0


def _ensure_builder(settings: Settings, client, paths: LabPaths, console: Console) -> None:
    """The factory's buildx builder (registry cache export needs one), made now rather than
    by the first build: its BuildKit image is compiled once per host (minutes)."""
    if client.kind != "buildx" or settings.build_cache == "off" or settings.buildx_builder:
        return
    log_file = paths.logs / "buildx-builder.log"
    paths.logs.mkdir(parents=True, exist_ok=True)
    console.print(f"buildx builder: making sure {buildx.FACTORY_BUILDER} is there (log "
                  f"{log_file}; the first time it compiles BuildKit, about 10 minutes)")
    with open(log_file, "a", encoding="utf-8") as handle:
        name = buildx.ensure_factory_builder(client, settings,
                                             lambda line: print(line, file=handle, flush=True))
    console.print(f"buildx builder: {name} ({buildx.builder_image(client, name)})")


def _ensure_apptainer(settings: Settings, client, paths: LabPaths,
                      console: Console) -> apptainer.Apptainer:
    try:
        runtime = apptainer.find(settings.lab_dir, client)
    except apptainer.ApptainerMissing:
        log_file = paths.logs / "apptainer-image.log"
        console.print(f"apptainer: making the lab's image from Debian's package (log {log_file})")
        paths.logs.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a", encoding="utf-8") as handle:
            runtime = apptainer_image.make_image(settings.lab_dir, client,
                                           lambda line: print(line, file=handle, flush=True))
    console.print(f"apptainer: {runtime.describe()}")
    return runtime


def _ensure_node(settings: Settings, client, runtime: apptainer.Apptainer, paths: LabPaths,
                 console: Console) -> apptainer.Node | None:
    """The cluster node the mpi-hybrid test runs on; a host Apptainer's node is the host."""
    if runtime.kind != "container":
        return None
    log_file = paths.logs / "node-image.log"
    paths.logs.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as handle:
        node = node_image.ensure(settings.lab_dir, client, runtime,
                                 lambda line: print(line, file=handle, flush=True))
    mpis = ", ".join(m.mpirun for m in node.mpis) or "no MPI found"
    console.print(f"cluster node: {node.image} ({mpis}; log {log_file})")
    return node


def _ensure_cluster(settings: Settings, client, node: apptainer.Node | None, paths: LabPaths,
                    console: Console) -> None:
    """The one-node Slurm cluster, on the node image (a second image layer, a minute once)."""
    if node is None:
        raise RuntimeError("the cluster is built on the lab's node image, which the lab makes "
                           "only where Apptainer runs from its container image, not on a host "
                           "with its own Apptainer")
    log_file = paths.logs / "cluster-image.log"
    with open(log_file, "a", encoding="utf-8") as handle:
        image = cluster_image.ensure(client, node.image,
                                     lambda line: print(line, file=handle, flush=True))
    cluster, started = slurm.ensure(settings.lab_dir, client.path, image)
    console.print(f"cluster: {cluster.container} {'started' if started else 'running'} "
                  f"({_cluster_details(cluster, 'idle')}; image log {log_file})")


def _cluster_details(cluster: slurm.Cluster, state: str | None) -> str:
    plugins = ", ".join(p for p in cluster.mpi_plugins if p != "none") or "none"
    return (f"node {cluster_image.NODE} {state or 'not answering'}, srun --mpi: {plugins}, "
            f"{cluster.image}, shared {cluster.shared}")


def _ensure_docker(paths: LabPaths, console: Console) -> None:
    running = docker_engine.daemon_version()
    if running and services.running_pid(paths.run, "dockerd") and (
            engine.engine_major(running) or 0) < (engine.installed_major() or 0):
        # The lab's own daemon predates the engine just installed: restart it on the new one.
        console.print(f"docker daemon: restarting ({running} is older than the installed one)")
        services.stop(paths.run, "dockerd")
        running = None
    if running:
        note = engine.slow_conversion_note(running)
        console.print(f"docker daemon: running ({running}{'; ' + note if note else ''})")
        return
    service = services.Service("dockerd", DOCKERD_ARGS,
                              ready=lambda: docker_engine.daemon_version() is not None)
    pid = services.start(service, paths.run, paths.logs)
    console.print(f"docker daemon: started (pid {pid}, log {paths.logs / 'dockerd.log'})")


def _ensure_registries(settings: Settings, paths: LabPaths, console: Console) -> None:
    for registry in lab_registries(settings):
        _ensure_registry(registry, paths, console)


def _ensure_registry(registry: LabRegistry, paths: LabPaths, console: Console) -> None:
    """Serve ``registry`` with its login; restart one of ours whose config is outdated."""
    address = registry.address
    credentials = ensure_login(registry)
    wanted = registry.config_text()
    ours = services.running_pid(paths.run, registry.service)
    current = registry.config.read_text() if registry.config.exists() else ""
    if ours and current != wanted:
        console.print(f"registry {address}: restarting with a new configuration (login)")
        services.stop(paths.run, registry.service)
    elif Registry(address).answers():
        if not _login_works(address, credentials):
            raise RuntimeError(f"registry {address} answers but refuses the lab's login "
                               f"({registry.credentials_file}); it was not started by this lab: "
                               "stop it, or point PIPELINE_REGISTRY/PIPELINE_PR_REGISTRY elsewhere")
        console.print(f"registry {address} ({registry.name}): answering, login required")
        return
    if not is_local(address):
        raise RuntimeError(f"registry {address} does not answer, and it is not on this host "
                           "for the lab to start; check PIPELINE_REGISTRY/PIPELINE_PR_REGISTRY")
    registry.config.write_text(wanted)
    service = services.Service(registry.service, ("docker-registry", "serve",
                                                  str(registry.config)),
                               ready=lambda: Registry(address).answers())
    pid = services.start(service, paths.run, paths.logs)
    console.print(f"registry {address} ({registry.name}): started (pid {pid}, data "
                  f"{registry.folder / 'data'}, login in {registry.credentials_file})")


def _login_works(address: str, credentials) -> bool:
    """Whether the registry wants a login and takes this one (an open registry is refused)."""
    anonymous = Registry(address, policy=LAB_RETRIES)
    try:
        anonymous.tags("factory/os")
    except RegistryAuthError:
        pass
    except RegistryError:
        return False
    else:
        return False  # it let an anonymous client in: not the lab's registry
    try:
        Registry(address, credentials, policy=LAB_RETRIES).tags("factory/os")
    except RegistryError:
        return False
    return True


def status(settings: Settings, out=sys.stdout, extras: tuple = ()) -> int:
    """A table of what runs, what is missing and the versions; 0 when all is ready."""
    paths = LabPaths(settings.lab_dir)
    rows = []
    daemon = docker_engine.daemon_version()
    started = services.running_pid(paths.run, "dockerd")
    note = engine.slow_conversion_note(daemon) if daemon else ""
    if note:
        daemon += f" ({note})"
    rows.append(("docker daemon", bool(daemon), f"{daemon} " + (
        f"(started by the lab, pid {started})" if started else "(not started by the lab)")
        if daemon else "not reachable"))
    try:
        client = docker_engine.find_build_client(settings)
        rows.append(("builder", True, f"{client.kind}: {client.path} client {client.version}"))
    except docker_engine.DockerUnavailable as err:
        rows.append(("builder", False, str(err)))
    for registry in lab_registries(settings):
        answering = Registry(registry.address).answers()
        pid = services.running_pid(paths.run, registry.service)
        login = registry.credentials_file.exists() and answering and _login_works(
            registry.address, ensure_login(registry))
        rows.append((f"registry ({registry.name})", bool(login), f"{registry.address} " + (
            ("answering, login required" if login else "answering WITHOUT the lab's login: "
             "run `lab up`") + (f" (started by the lab, pid {pid})" if pid else "")
            if answering else "not answering")))
    for arch in ("amd64", "arm64"):
        if arch != host.host_arch():
            state = host.binfmt_state(arch)
            rows.append((f"qemu {arch}", bool(state and state.startswith("enabled")),
                         state or "not registered"))
    boot = host.tool_version(["mmdebstrap", "--version"])
    rows.append(("mmdebstrap", boot is not None, boot or "missing"))
    try:
        client = docker_engine.find_build_client(settings)
        runtime = apptainer.find(settings.lab_dir, client)
        rows.append(("apptainer", True, runtime.describe()))
    except (docker_engine.DockerUnavailable, apptainer.ApptainerMissing) as err:
        rows.append(("apptainer", False, str(err)))
    if "cluster" in extras or slurm.marker(settings.lab_dir).exists():
        rows.append(_cluster_row(settings))
    table = Table(title=f"lab ({paths.root})")
    for column in ("component", "ready", "details"):
        table.add_column(column)
    for name, ok, details in rows:
        table.add_row(name, "[green]yes[/]" if ok else "[red]no[/]", details)
    make_console(out).print(table)
    return 0 if all(ok for _, ok, _ in rows) else 1


def _cluster_row(settings: Settings) -> tuple:
    docker = _docker_cli(settings)
    cluster = slurm.find(settings.lab_dir, docker) if docker else None
    if cluster is None:
        return ("cluster", False, "not running: `python -m pipeline lab up --with cluster`")
    state = cluster.node_state()
    return ("cluster", state in slurm.SERVING, f"{cluster.container}: "
            f"{_cluster_details(cluster, state)}")


def _docker_cli(settings: Settings) -> str | None:
    found = docker_engine.candidates(settings)
    return found[0] if found else None


def down(settings: Settings, out=sys.stdout, extras: tuple = ()) -> int:
    """Stop what ``up`` started: the cluster (asked for or not), the registries, dockerd."""
    paths = LabPaths(settings.lab_dir)
    docker = _docker_cli(settings)
    if docker and slurm.stop(settings.lab_dir, docker):
        print(f"cluster: {slurm.CONTAINER} removed", file=out)
    elif "cluster" in extras:
        print("cluster: not started by the lab, left alone", file=out)
    for name in (*(r.service for r in lab_registries(settings)), "dockerd"):
        stopped = services.stop(paths.run, name)
        print(f"{name}: {'stopped' if stopped else 'not started by the lab, left alone'}",
              file=out)
    return 0
