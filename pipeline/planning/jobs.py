"""The build plan: every cell of every image as a job with an id, its needs and a build_id.

A job's id is ``<repository>:<tag>@<arch>`` (the repository without registry host), e.g.
``sjtuhpc/hpc-base-container:gcc-12.ompi-4.1@arm64``.  Its ``build_id`` is a content hash
of everything that goes into the image: the recipe files (git blob ids), the variables,
the arch and the build_ids of the jobs it builds FROM, so that a change to a base changes
the build_id of every image built on it.

An image builds FROM its ``base:`` (a Dockerfile recipe), or FROM what its ``recipe.def``'s
``From:`` lines name: a tag this catalogue publishes becomes the need
``<repository>:<tag>@<the cell's arch>``, whose variables must agree with the cell's on
every axis; a public image is only recorded (``sources``).  The definition file is read
once per image, not once per cell.

Jobs come in dependency order: a job after every job it needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from pipeline.catalogue.model import Catalogue, Image, Tree
from pipeline.catalogue.tags import check_tag, render, tag_fields
from pipeline.errors import InputError, Problem, Problems
from pipeline.planning.build_ids import build_id
from pipeline.planning.definition_file import (
    StageSource,
    missing_tag,
    read_definition,
    stage_sources,
)
from pipeline.planning.expansion import Cell, expand


@dataclass(frozen=True)
class Job:
    id: str
    image: str
    kind: str
    repository: str
    tag: str
    arch: str
    variables: dict
    recipe: str
    needs: tuple
    build_id: str
    action: str = "build"
    reason: str = ""
    # (path, git mode, blob id) of every input file: kept to say *which* file changed.
    files: tuple = field(default=(), repr=False, compare=False)
    # URLs of package repository metadata the recipe installs from (``upstream:``): read at
    # run time into the effective build_id, never into the plan's.
    upstream: tuple = ()
    recipe_file: str = "Dockerfile"  # or "recipe.def", in the folder ``recipe``
    # recipe.def only: (From: line, "need" | "public", the need's job id | the reference as
    # written) of each stage, in order: what the build stage pins each From: line to.
    sources: tuple = ()

    def to_json(self) -> dict:
        data = asdict(self)
        del data["files"]
        del data["upstream"]
        data["needs"] = list(self.needs)
        data["sources"] = [{"line": line, "kind": kind, "ref": ref}
                           for line, kind, ref in self.sources]
        return data


def build_plan(catalogue: Catalogue, tree: Tree) -> list[Job]:
    """Expand ``catalogue`` into jobs; raise InputError listing every problem found."""
    problems = Problems(catalogue.file)
    sources = _definition_sources(catalogue, tree, problems)
    order = _image_order(catalogue, sources, problems)
    problems.raise_if_any()
    jobs: list[Job] = []
    by_image: dict[str, list[Job] | None] = {}  # None: the image had problems
    first_seen: dict[str, tuple[Image, Cell]] = {}
    for image in order:
        if image.recipe_file == "recipe.def":
            by_image[image.name] = _definition_jobs(
                image, catalogue, tree, sources[image.name], by_image=by_image,
                first_seen=first_seen, problems=problems)
        else:
            by_image[image.name] = _image_jobs(image, catalogue, tree, by_image, first_seen,
                                               problems)
        jobs.extend(by_image[image.name] or [])
    problems.raise_if_any()
    return jobs


def _definition_sources(catalogue: Catalogue, tree: Tree, problems: Problems) -> dict:
    """image name -> the StageSources of its recipe.def (read once per image), for every
    image with one; None for one with problems (added to ``problems``)."""
    found = {}
    for image in catalogue.images:
        if image.recipe_file != "recipe.def":
            continue
        path = f"{image.recipe}/recipe.def"
        try:
            definition = read_definition(path, tree.read_text(path) or "")
            found[image.name] = stage_sources(definition, catalogue)
        except InputError as err:
            problems.extend(err.problems)
            found[image.name] = None
    return found


def _definition_jobs(image, catalogue, tree, sources, *, by_image, first_seen,
                     problems) -> list[Job] | None:
    """The jobs of an image built from a recipe.def: each cell's needs are the jobs its
    From: lines name, for the cell's arch; their variables must agree with the cell's."""
    if sources is None or any(by_image.get(i.name, []) is None
                              for i in _source_images(catalogue, sources, image)):
        return None  # its definition file, or an image it builds FROM, is broken already
    ours = {j.id: j for jobs in by_image.values() for j in jobs or []}
    path = f"{image.recipe}/recipe.def"
    missing: dict = {}  # StageSource -> arches whose job is not planned
    disagree: dict = {}  # (line, message) -> None, each said once for all cells
    cells = _image_jobs(image, catalogue, tree, by_image, first_seen, problems)
    if cells is None:
        return None  # no cells: said already
    jobs = []
    for job in cells:  # planned as if FROM nothing; needs and sources come from From: lines
        needs, entries = [], []
        for source in sources:
            if source.kind == "public":
                entries.append((source.line, "public", source.ref))
                continue
            need = ours.get(f"{source.repository}:{source.tag}@{job.arch}")
            if need is None:
                missing.setdefault(source, []).append(job.arch)
                continue
            for message in _disagreements(image, job, need, source, catalogue):
                disagree.setdefault((source.line, message), None)
            entries.append((source.line, "need", need.id))
            if need not in needs:
                needs.append(need)
        if len(entries) == len(sources):
            jobs.append(replace(job, needs=tuple(n.id for n in needs), sources=tuple(entries),
                                build_id=build_id(job.files, job.variables, job.arch,
                                                  [n.build_id for n in needs])))
    for source, arches in missing.items():
        known = sorted({j.tag for j in ours.values() if j.repository == source.repository
                        and j.arch in arches})
        problems.extend([Problem(path, source.line, missing_tag(source, sorted(set(arches)),
                                                                known))])
    problems.extend([Problem(path, line, message) for line, message in disagree])
    return None if missing or disagree else jobs


def _disagreements(image: Image, job: Job, need: Job, source: StageSource,
                   catalogue: Catalogue) -> list[str]:
    """Axes on which the cell and the job its From: names have different values: the app
    would claim (in its tag, labels and build arguments) what its base is not."""
    base, cell = (j.id.rsplit("@", 1)[0] for j in (need, job))  # one message for all arches
    return [f"From: '{source.ref}' is {base}, built for {axis}={need.variables[axis]}, but "
            f"image {image.name}'s cell {cell} has {axis}={job.variables[axis]}; name the "
            f"tag built for {axis}={job.variables[axis]}, or give image {image.name} "
            f"{axis}: {need.variables[axis]} (in its axes or an include entry)"
            for axis in catalogue.axes
            if axis != "arch" and job.variables.get(axis) != need.variables.get(axis)]


def _source_images(catalogue: Catalogue, sources: tuple | None, image: Image) -> list[Image]:
    """The images a recipe.def may build FROM: every other image in a repository one of its
    From: lines names (which image has the tag is known only once they are planned)."""
    repositories = {s.repository for s in sources or () if s.kind == "need"}
    return [i for i in catalogue.images if i.repository in repositories and i is not image]


def _image_jobs(image, catalogue, tree, by_image, first_seen, problems) -> list[Job] | None:
    label = f"image {image.name}"
    expansion = expand(image, catalogue)
    for axis in sorted(expansion.missing_defaults):
        problems.add(image.line, f"{label} does not span axis {axis}, and axis {axis} has no "
                     f"default; add {axis} to the image's axes or give axes.{axis}.default")
    if not expansion.cells:
        if not expansion.missing_defaults:
            problems.add(image.line, f"{label} has no cells left: {expansion.explain()}; "
                         "loosen those rules or fix the image's axes")
        return None
    base_jobs = by_image.get(image.base.image) if image.base else []
    if image.base and base_jobs is None:
        return None  # its base is broken already, and said so
    match = _match_axes(image, catalogue)
    base_index: dict[tuple, list[Job]] = {}
    for job in base_jobs:
        base_index.setdefault(tuple(job.variables[a] for a in match), []).append(job)

    files = _input_files(image, tree)
    jobs, unresolved, ambiguous, bad_tags = [], [], [], {}
    for cell in expansion.cells:
        variables = cell_variables(cell, catalogue)
        defaults = {a: catalogue.effective_default(a, cell.values["os"]) for a in catalogue.axes}
        fields = tag_fields(image.name, cell.values, variables, catalogue.axes, defaults)
        try:
            tag = render(image.tag, fields)
        except KeyError as err:
            bad_tags.setdefault(f"field {{{err.args[0]}}} has no value for the cell "
                                f"{_show(cell.values)}; give it in every include entry that "
                                "adds cells, or drop it from the template", None)
            continue
        refused = check_tag(tag)
        if refused:
            bad_tags.setdefault(refused, None)
            continue
        arch = cell.values["arch"]
        job_id = f"{image.repository}:{tag}@{arch}"
        if job_id in first_seen:
            other_image, other_cell = first_seen[job_id]
            problems.add(image.tag_line, f"two cells get the id {job_id}: {label} "
                         f"{_show(cell.values)} and image {other_image.name} (line "
                         f"{other_image.line}) {_show(other_cell.values)}; make the tag template "
                         "tell them apart (e.g. add a field) or exclude one")
            continue
        first_seen[job_id] = (image, cell)
        needs: tuple = ()
        if image.base:
            key = tuple(cell.values[a] for a in match)
            found = base_index.get(key, [])
            if not found:
                unresolved.append(f"{job_id} needs {_show(dict(zip(match, key, strict=True)))}")
                continue
            if len(found) > 1:
                ambiguous.append(f"{job_id} matches {', '.join(j.id for j in found)}")
                continue
            needs = (found[0],)
        jobs.append(Job(
            id=job_id, image=image.name, kind=image.kind, repository=image.repository, tag=tag,
            arch=arch, variables=variables, recipe=image.recipe,
            needs=tuple(n.id for n in needs),
            build_id=build_id(files, variables, arch, [n.build_id for n in needs]),
            files=files, upstream=image.upstream_urls(variables), recipe_file=image.recipe_file,
        ))
    _report_cells_left_out(image, match, bad_tags, unresolved, ambiguous, problems)
    return jobs


def _report_cells_left_out(image: Image, match: tuple, bad_tags: dict, unresolved: list,
                           ambiguous: list, problems: Problems) -> None:
    """Say why cells got no job: a tag that does not render, or no single base cell."""
    label = f"image {image.name}"
    for message in bad_tags:
        problems.add(image.tag_line, f"{label} tag '{image.tag}': {message}")
    if unresolved:
        problems.add(image.base.line, f"{label}: no cell of base image '{image.base.image}' "
                     f"matches on {', '.join(match)}: {_few(unresolved)}; add that cell to "
                     f"the base image or restrict {image.name}'s axes")
    if ambiguous:
        problems.add(image.base.line, f"{label}: several cells of base image "
                     f"'{image.base.image}' match: {_few(ambiguous)}; add the axis that tells "
                     "them apart to base.match")


def cell_variables(cell: Cell, catalogue: Catalogue) -> dict:
    """Axis values, then each value's attributes as ``<axis>_<attr>``, then the extras.

    >>> # {"os": "debian12", ..., "mpi": "ompi-4.1", "mpi_family": "openmpi", ...}
    """
    variables = dict(cell.values)
    for axis, key in cell.values.items():
        for attr, value in catalogue.axes[axis].values[key].attrs.items():
            variables[f"{axis}_{attr}"] = value
    variables.update(cell.extras)
    return variables


def _input_files(image: Image, tree: Tree) -> tuple:
    entries = set(tree.files(image.recipe))
    for extra in image.inputs:
        entries.update(tree.files(extra.rstrip("/")))
    return tuple(sorted(entries))


def _match_axes(image: Image, catalogue: Catalogue) -> tuple:
    if not image.base:
        return ()
    if image.base.match:
        axes = list(image.base.match)
    else:
        axes = list(catalogue.image(image.base.image).axes)
    if "arch" not in axes:  # an arm64 image is never built FROM an amd64 one
        axes.append("arch")
    return tuple(axes)


def _image_order(catalogue: Catalogue, sources: dict, problems: Problems) -> list[Image]:
    """Images with each one's bases before it (its ``base:``, or the images its recipe.def
    may build FROM), otherwise in the order written."""
    names = {i.name: i for i in catalogue.images}
    order: list[Image] = []
    done: set[str] = set()
    reported: set[frozenset] = set()

    def visit(image: Image, path: list[str]) -> None:
        if image.name in done:
            return
        if image.name in path:
            cycle = [*path[path.index(image.name):], image.name]
            if frozenset(cycle) not in reported:
                reported.add(frozenset(cycle))
                problems.add(image.base.line if image.base else image.line,
                             "images build FROM each other in a cycle: "
                             f"{' -> '.join(cycle)}; one of them must use another base")
            return
        if image.base:
            bases = [names[image.base.image]] if image.base.image in names else []
        else:
            bases = _source_images(catalogue, sources.get(image.name), image)
        for base in bases:
            visit(base, [*path, image.name])
        if image.name not in done:
            done.add(image.name)
            order.append(image)

    for image in catalogue.images:
        visit(image, [])
    return order


def _show(values: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in values.items()) + "}"


def _few(items: list, limit: int = 3) -> str:
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more
