"""Build stage of a ``recipe.def`` job: Apptainer builds the SIF itself, unprivileged.

A recipe folder may hold an Apptainer definition file instead of a Dockerfile, written as
the centre's users write them (``Bootstrap: docker``, ``From:`` a tag this catalogue
publishes, several stages, ``%files from build``, ``%test``).  The plan turned each such
``From:`` into a need (``Job.sources``); here:

1. **Pin.** Each need's image is fetched by digest from staging (the need's ``Built``)
   into an OCI layout in the job's scratch folder, by the factory's own registry client
   (``pipeline.tools.oci_layout``: every blob checked against its digest).  No recipe code
   runs in this step, and only this step sees the staging login.
2. **Rewrite.** That stage's header becomes ``Bootstrap: oci`` / ``From: <scratch>/
   sha256-<digest>``: the exact staged base, never a moving tag.  A public ``From:`` stays as
   written (Apptainer pulls it, for the job's arch).  The factory's ``%labels`` (and its
   ``%help`` unless the recipe has one) go into the last stage, which is the SIF.
3. **Build.** ``apptainer build --fakeroot --notest`` of the rewritten file, in the recipe
   folder (``%files`` paths are relative to it; H3's planner refuses any outside it), as
   uid 1000 with every capability dropped: a user namespace maps it to root for %post,
   the other ids to subordinate ones (``/etc/subuid`` of the throw-away runtime
   container).  No Docker socket, no credential in its environment, the recipe folder
   read-only.  arm64 runs under QEMU (binfmt F flag).
4. **Check and stage.** The SIF is verified as a converted one is (definition file, system
   partition of the job's arch, labels), then pushed to the run's staging as an ORAS
   artifact where a Dockerfile job's image would be, ``<staging>/<repository>:<build_id
   [:32]>-<arch>``, with an attestation (trusted staging).  A later run, ``run --only``'s
   needs and ``publish`` take it from there: the same effective build_id is never rebuilt.

The effective build_id folds in the needs' effective build_ids, as for a Dockerfile app;
with no need (public bases only) the OS content, as the plan computes it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from pipeline.catalogue.text import section_lines
from pipeline.names import sif_name
from pipeline.planning.build_ids import effective_build_id, upstream_identities
from pipeline.planning.jobs import Job
from pipeline.stages.built import BuildFailed, Built, NeedNotStaged, staging_ref
from pipeline.stages.context import StageContext
from pipeline.stages.definition import UnsafeDefinition, label_key, one_line, sif_labels
from pipeline.stages.labels import image_labels
from pipeline.stages.scratch import ScratchTooSmall
from pipeline.stages.sif_check import ConvertFailed, verify
from pipeline.tools.apptainer import MOUNT, PREPARE, UNPRIVILEGED, USER, Apptainer, Scratch
from pipeline.tools.digests import sha256_file
from pipeline.tools.oci_artifacts import SIF_LAYER, put_sif
from pipeline.tools.oci_layout import fetch_layout
from pipeline.tools.processes import Log, run_logged
from pipeline.tools.upstream import UpstreamUnknown

DEFINITION_FILE = "recipe.def"
NO_IMAGE = "none"  # the image-digest label of a SIF that no Docker image was converted into
_BOOTSTRAP = re.compile(r"(?i)bootstrap:")  # where Apptainer starts a stage (column 0)
_FROM = re.compile(r"(?i)\s*from\s*:")  # a header line, read as the planner reads it
# The runtime container's subordinate ids for uid 1000: what lets %post's apt/dpkg change
# owners in the build's user namespace (without them only uid 0 maps, and apt fails).
SUBIDS = f"echo {USER}:100000:65536 > /etc/subuid && echo {USER}:100000:65536 > /etc/subgid && "


def is_definition(job: Job) -> bool:
    return job.recipe_file == DEFINITION_FILE


def build(job: Job, needs: dict, ctx: StageContext, log: Log, *,
          reuse_only: bool = False) -> Built:
    """Build ``job``'s SIF (or take it from staging); ``needs`` maps need ids to their Built."""
    for need_id in job.needs:
        if needs[need_id].sif_only:
            raise BuildFailed(f"{need_id} is itself a SIF built from a recipe.def; build FROM "
                              "an image built from a Dockerfile")
    if job.needs:
        below = [needs[n].build_id for n in job.needs]
    else:  # public bases only: what the plan folds in (already_published.effective_build_ids)
        below = [ctx.os_bases.upstream.identity(job.variables)]
    try:
        build_id = effective_build_id(job, below, upstream_identities(job, ctx.os_bases.upstream))
    except UpstreamUnknown as err:
        raise BuildFailed(f"cannot tell what the image's upstream is now: {err}") from None
    first = needs[job.needs[0]] if job.needs else None
    base_name = job.needs[0].rsplit("@", 1)[0] if first else _public_base(job)
    base_digest = first.digest if first else ""
    sif = ctx.sif_dir / sif_name(job.id)
    labels = sif_labels(job, build_id, NO_IMAGE, ctx.source.revision)
    staged = _staged(job, build_id, (base_name, base_digest), sif, ctx, log)
    if staged is not None:
        return staged
    if reuse_only:
        raise NeedNotStaged(
            f"{job.id} is not in staging as oras://"
            f"{ctx.staging.reference(job.repository, ctx.staging.tag(build_id, job.arch))}; "
            "the CI job that builds it must pass first (re-run it, then this one)")
    scratch = ctx.scratch / sif.stem
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        def_text = _pinned_definition(job, needs, scratch, ctx, log)
        extra = {**image_labels(job, build_id, base_name, base_digest, ctx.source), **labels}
        def_text = with_factory_sections(def_text, job, extra, ctx.descriptions.get(job.image, ""))
        # Apptainer unpacks each stage's base and squashes the last: held from the run's
        # scratch budget like a conversion (about twice the compressed layers, unpacked).
        layers = sum(f.stat().st_size for f in scratch.rglob("*") if f.is_file())
        with ctx.scratch_budget.reserve(ctx.settings.convert_scratch, 2 * layers,
                                        scratch / "tmp", ctx.apptainer.kind, log) as room:
            log(f"scratch {room.reason}")
            _apptainer_build(job, def_text, room, sif, ctx, log)
    except ScratchTooSmall as err:
        raise BuildFailed(str(err)) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    try:
        verify(sif, job, labels, ctx, log)
    except ConvertFailed as err:
        raise BuildFailed(str(err)) from None
    return _stage(job, build_id, (base_name, base_digest), sif, ctx, log)


def _public_base(job: Job) -> str:
    return next((ref for _, kind, ref in job.sources if kind == "public"), "")


def _staged(job: Job, build_id: str, base: tuple, sif: Path, ctx: StageContext,
            log: Log) -> Built | None:
    """The SIF staging holds for this build_id, when a trusted run put it there (downloaded
    into ``sif`` unless the file there is already it); None otherwise."""
    staging = ctx.staging
    registry = staging.client()
    repository, tag = staging_ref(job, build_id, staging)
    found = registry.manifest(repository, tag)
    if found is None:
        return None
    body, _, manifest = found
    layers = _json(body).get("layers") or [{}]
    problem = (None if layers[0].get("mediaType") == SIF_LAYER else "it is not a SIF") or \
        staging.distrust_artifact(registry, repository, tag, manifest, build_id, job.id)
    where = f"oras://{staging.registry}/{repository}:{tag}"
    if problem:
        log(f"not reused: {where} ({manifest}): {problem}")
        return None
    layer = layers[0]["digest"]
    if not (sif.exists() and sha256_file(sif) == layer):
        sif.parent.mkdir(parents=True, exist_ok=True)
        partial = sif.with_name(sif.name + ".partial")
        registry.download_blob(repository, layer, partial)
        partial.replace(sif)
    log(f"already built: {where} ({manifest}), SIF {layer}")
    return Built(where, f"oras://{staging.registry}/{repository}@{manifest}", manifest,
                 build_id, *base, True, sif)


def _json(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _pinned_definition(job: Job, needs: dict, scratch: Path, ctx: StageContext,
                       log: Log) -> str:
    """The recipe's definition file with each need's stage pinned to a local OCI layout of
    the need's staged image (fetched here, by digest)."""
    text = (ctx.catalogue_dir / job.recipe / DEFINITION_FILE).read_text()
    registry = ctx.staging.client()
    layouts: dict = {}  # need id -> From: value
    for need_id in job.needs:
        built = needs[need_id]
        folder = scratch / built.digest.replace(":", "-")
        log(f"fetching {built.reference} into {folder} (the stages FROM {need_id})")
        fetch_layout(registry, built.staging_repository, built.digest, folder)
        layouts[need_id] = str(folder)
    return pin_sources(text, job.sources, layouts)


def pin_sources(text: str, sources: tuple, layouts: dict) -> str:
    """``text`` with the header of each stage whose From: line is a need rewritten to
    ``Bootstrap: oci`` / ``From: <layout folder>``; public stages stay as written.

    >>> pin_sources("Bootstrap: docker\\nFrom: x/base:1\\nStage: b\\n%post\\n", ((2, "need",
    ...             "x/base:1@amd64"),), {"x/base:1@amd64": "/s/sha256-ab"})
    'Bootstrap: oci\\nFrom: /s/sha256-ab\\nStage: b\\n%post\\n'
    """
    lines = text.split("\n")
    for from_line, kind, ref in sources:
        if kind != "need":
            continue
        start = next((n for n in range(from_line - 1, -1, -1) if _BOOTSTRAP.match(lines[n])),
                     None)
        if start is None or not _FROM.match(lines[from_line - 1]):
            raise BuildFailed(f"{DEFINITION_FILE} line {from_line} is not the From: line the "
                              "plan read; plan again")
        lines[start] = "Bootstrap: oci"
        lines[from_line - 1] = f"From: {one_line(layouts[ref])}"
    return "\n".join(lines)


def with_factory_sections(text: str, job: Job, labels: dict, description: str) -> str:
    """The definition file with the factory's ``%labels`` (and ``%help``, when the recipe's
    last stage has none) added at its end, that is to the last stage: the SIF's."""
    last = [m.start() for m in re.finditer(r"(?mi)^bootstrap:", text)][-1:] or [0]
    has_help = any(word.lower() == "%help" for _, word in section_lines(text[last[0]:]))
    out = [text.rstrip("\n"), "", "%labels"]
    out += [f"    {label_key(key)} {one_line(value)}" for key, value in labels.items()
            if str(value)]
    if not has_help:
        title = f"{job.id.rsplit('@', 1)[0]} for {job.arch}, built by the HPC container image " \
                "factory from a definition file."
        out += ["", "%help", f"    {one_line(title, starts_line=True)}"]
        if description:
            out.append(f"    {one_line(description, starts_line=True)}")
        out += [f"    Its tests:  apptainer test {sif_name(job.id)}"]
    added = [w for _, w in section_lines("\n".join(out[1:]))]
    if added != (["%labels"] if has_help else ["%labels", "%help"]):
        raise UnsafeDefinition(f"the factory's sections would read as {added}")
    return "\n".join(out) + "\n"


def _apptainer_build(job: Job, def_text: str, room: Scratch, sif: Path, ctx: StageContext,
                     log: Log) -> None:
    """``apptainer build`` of ``def_text`` into ``sif``, unprivileged (see the module);
    Apptainer's temporary files (the stages' root filesystems) go to ``room``."""
    scratch = room.path.parent
    def_file = scratch / DEFINITION_FILE
    def_file.write_text(def_text)
    room.path.mkdir()
    out = scratch / "out.sif"
    for path in [scratch, *scratch.rglob("*")]:  # uid 1000 builds here
        path.chmod(0o777 if path.is_dir() else 0o644)
    recipe = (ctx.catalogue_dir / job.recipe).resolve()
    # --force: the factory's %labels replace the ones the base brought (Apptainer keeps an
    # inherited label otherwise, and the SIF would say it is the base).
    args = ["build", "--fakeroot", "--force", "--notest", "--disable-cache", "--arch", job.arch,
            str(out), str(def_file)]
    host = ctx.apptainer.kind == "host"
    try:
        run_logged(build_argv(ctx.apptainer, args, recipe, room), log,
                   cwd=recipe if host else None,
                   env={"APPTAINER_TMPDIR": str(room.path)} if host else None)
    except subprocess.CalledProcessError:
        raise BuildFailed(f"apptainer build of {job.recipe}/{DEFINITION_FILE} failed; see the "
                          "log") from None
    sif.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(out, sif.with_name(sif.name + ".partial"))
    sif.with_name(sif.name + ".partial").replace(sif)
    sif.chmod(0o644)
    sif.with_suffix(".def").write_text(def_text)


def build_argv(apptainer: Apptainer, args: list, recipe: Path, room: Scratch) -> list:
    """The command line of an unprivileged ``apptainer ARGS`` in ``recipe``, writing only in
    the job's scratch folder (``room.path``'s parent) and ``room``: the runtime container as
    uid 1000 with subordinate ids, no Docker socket, no credentials, the recipe folder
    read-only; or the host's own apptainer."""
    if apptainer.kind == "host":
        return [apptainer.command, *args]
    scratch = room.path.parent
    if room.in_memory:  # exec: Apptainer runs the stages' %post from there
        tmp = ["--tmpfs", f"{MOUNT}:exec,size={room.memory_bytes}", "-e",
               f"APPTAINER_TMPDIR={MOUNT}"]
    else:
        tmp = ["-e", f"APPTAINER_TMPDIR={room.path}"]
    return [apptainer.docker, "run", "--rm", *apptainer.container_options(),
            "--network", "host", "-v", f"{recipe}:{recipe}:ro", "-v", f"{scratch}:{scratch}",
            "-w", str(recipe), *tmp, *UNPRIVILEGED,
            "-e", "HOME=/home/factory", apptainer.image, "sh", "-c",
            SUBIDS + PREPARE + f"chmod 1777 {MOUNT} 2>/dev/null; "
            f'exec setpriv --reuid={USER} --regid={USER} --clear-groups "$@"',
            "apptainer", apptainer.command, *args]


def _stage(job: Job, build_id: str, base: tuple, sif: Path, ctx: StageContext,
           log: Log) -> Built:
    """Push the built SIF to staging (where a Dockerfile job's image goes), attested."""
    staging = ctx.staging
    registry = staging.client()
    repository, tag = staging_ref(job, build_id, staging)
    pushed = put_sif(registry, repository, tag, sif, {
        "org.sjtuhpc.factory.build-id": build_id, "org.sjtuhpc.factory.id": job.id,
        "org.opencontainers.image.title": sif.name})
    staging.attest(registry, repository, tag, pushed.manifest, build_id, job.id)
    where = f"oras://{staging.registry}/{repository}:{tag}"
    log(f"staged the built SIF as {where} ({pushed.manifest})")
    return Built(where, f"oras://{staging.registry}/{repository}@{pushed.manifest}",
                 pushed.manifest, build_id, *base, False, sif)
