"""The catalogue: matrix.yaml read into frozen dataclasses, with every cross-reference checked.

Reading happens in three steps, each reporting all of its problems at once:

1. YAML syntax (``pipeline.catalogue.yaml_reader``);
2. structure, types and unknown keys (``pipeline.catalogue.schema``);
3. meaning (this module): axis values that exist, recipe folders that exist and stay
   inside the catalogue's folder (no ``..`` out of it, no absolute path, no symlink out of
   it) and hold exactly one recipe (a ``Dockerfile`` or a ``recipe.def``), recipe test
   scripts that cannot start a section of a definition file, base images that exist (and
   no ``base:`` for a ``recipe.def``, whose ``From:`` lines name its bases), tag and
   ``upstream`` templates whose fields exist, ``ci.runners`` for arches that exist.

A ``recipe.def`` itself is read by the planner (``pipeline.planning.definition_file``),
which knows the tags its ``From:`` lines must name.

Expansion into cells and the plan come after (``pipeline.planning``).
"""

from __future__ import annotations

import os
import posixpath
import string
from pathlib import Path

from pipeline.catalogue import tags
from pipeline.catalogue.model import (
    Axis,
    AxisValue,
    BaseRef,
    Catalogue,
    CiRunner,
    Combination,
    Constraint,
    Image,
    Target,
    Tree,
)
from pipeline.catalogue.schema import check_schema, where
from pipeline.catalogue.text import section_lines
from pipeline.catalogue.yaml_reader import Document, parse_yaml
from pipeline.errors import Problem, Problems

RECIPES = ("Dockerfile", "recipe.def")  # a recipe folder holds exactly one of them
LEAVES = "leaves the repository; paths are relative to matrix.yaml and stay inside it"
# GitHub's limit for one job on a self-hosted runner (5 days); hosted runners stop at 360.
MAX_TIMEOUT_MINUTES = 7200


def load_catalogue(tree: Tree, path: str, display: str | None = None) -> Catalogue:
    """Read and check ``path`` (relative to ``tree``); raise InputError listing every problem."""
    display = display or path
    text = tree.read_text(path)
    if text is None:
        problems = Problems(display)
        problems.add(None, "file not found; pass --matrix with the catalogue's path")
        problems.raise_if_any()
    doc = parse_yaml(text, display)
    check_schema(doc)
    return _Reader(doc, tree).read()


class _Reader:
    """Turns checked data into a Catalogue, collecting problems of meaning."""

    def __init__(self, doc: Document, tree: Tree):
        self.doc = doc
        self.tree = tree
        self.problems = Problems(doc.file)

    def line(self, *path) -> int | None:
        return self.doc.line(path)

    def read(self) -> Catalogue:
        data = self.doc.data
        axes = self._axes(data["axes"])
        targets = {
            name: Target(name, t["registry"], t.get("library", {}).get("endpoint"),
                         t.get("library", {}).get("collection"))
            for name, t in data["targets"].items()
        }
        default_target = data.get("default_target", "local")
        if default_target not in targets:
            self.problems.add(self.line("default_target") or self.line("targets"),
                              f"default target '{default_target}' is not among targets "
                              f"({', '.join(targets)}); set default_target to one of them")
        constraints = tuple(
            self._constraint(i, c, axes) for i, c in enumerate(data.get("constraints", []))
        )
        images = tuple(self._image(i, d, axes, data["repositories"])
                       for i, d in enumerate(data["images"]))
        self._check_images(images, axes)
        runners = self._runners(data.get("ci", {}).get("runners", {}), axes)
        self.problems.raise_if_any()
        return Catalogue(self.doc.file, axes, constraints, images, dict(data["repositories"]),
                         targets, default_target, runners)

    # -- ci -----------------------------------------------------------------------------
    def _runners(self, raw: dict, axes: dict) -> dict:
        """``ci.runners``: one CiRunner per arch, each a value of ``axes.arch``."""
        runners = {}
        for arch, spec in raw.items():
            at = ("ci", "runners", arch)
            self._check_value(axes, "arch", arch, at, what="ci.runners")
            timeout = int(spec["timeout_minutes"]) if "timeout_minutes" in spec else None
            if timeout is not None and timeout > MAX_TIMEOUT_MINUTES:
                self.problems.add(self.line(*at, "timeout_minutes"),
                                  f"ci.runners.{arch}.timeout_minutes: {timeout} is over "
                                  f"{MAX_TIMEOUT_MINUTES} (5 days, GitHub's limit for a job on "
                                  "a self-hosted runner); give fewer minutes")
            tags = spec.get("gitlab", ())
            runners[arch] = CiRunner(arch, spec.get("github"),
                                     (tags,) if isinstance(tags, str) else tuple(tags), timeout,
                                     bool(spec.get("emulated", False)), self.line(*at))
        return runners

    # -- axes ---------------------------------------------------------------------------
    def _axes(self, raw: dict) -> dict:
        axes = {}
        for name, spec in raw.items():
            values = spec["values"]
            if isinstance(values, list):
                values = {v: {} for v in values}
            prefix = spec.get("prefix", name)
            axis_values = {}
            for key, given in values.items():
                attrs = dict(given or {})
                at = ("axes", name, "values", key)
                if name == "os":
                    axis_values[key] = self._os_value(key, attrs, at)
                    continue
                if name == "arch":
                    attrs.setdefault("platform", f"linux/{key}")
                component = attrs.pop("tag", f"{prefix}-{key}" if prefix else key)
                axis_values[key] = AxisValue(key, component, attrs, {}, self.line(*at))
            default = spec.get("default")
            if default is not None and default not in axis_values:
                self.problems.add(self.line("axes", name, "default"),
                                  f"default '{default}' of axis {name} is not one of its values "
                                  f"({', '.join(axis_values)})")
            axes[name] = Axis(name, axis_values, default, self.line("axes", name))
        for key, value in axes["os"].values.items():
            for axis, default in value.defaults.items():
                at = ("axes", "os", "values", key, "defaults", axis)
                self._check_value(axes, axis, default, at, what=f"default of os {key}")
        return axes

    def _os_value(self, key: str, attrs: dict, at: tuple) -> AxisValue:
        sources = [s for s in ("bootstrap", "image") if s in attrs]
        if len(sources) != 1:
            self.problems.add(self.line(*at), f"os {key} must say how its base image is obtained: "
                              "give either 'image: REGISTRY/REPO:TAG' or 'bootstrap: {suite, "
                              "mirror}', not " + ("both" if sources else "neither"))
        flat = {"source": sources[0] if sources else ""}
        if "image" in attrs:
            flat["image"] = attrs["image"]
        for k, v in attrs.get("bootstrap", {}).items():
            flat[k] = v
        return AxisValue(key, attrs.get("tag", key), flat, dict(attrs.get("defaults", {})),
                         self.line(*at))

    def _check_value(self, axes: dict, axis: str, value: str, at: tuple, what: str) -> bool:
        if axis not in axes:
            self.problems.add(self.line(*at), f"{what}: there is no axis '{axis}' "
                              f"(axes: {', '.join(axes)})")
            return False
        if value not in axes[axis].values:
            self.problems.add(self.line(*at), f"{what}: '{value}' is not a value of axis {axis}; "
                              f"use one of {', '.join(axes[axis].values)} or add it under "
                              f"axes.{axis}.values")
            return False
        return True

    # -- constraints --------------------------------------------------------------------
    def _constraint(self, index: int, raw: dict, axes: dict) -> Constraint:
        at = ("constraints", index)
        when = {}
        for axis, given in raw["if"].items():
            values = (given,) if isinstance(given, str) else tuple(given)
            for v in values:
                self._check_value(axes, axis, v, (*at, "if", axis), what=f"{where(at)}.if")
            when[axis] = values
        allow = {}
        for axis, rule in raw["then"].items():
            line_at = (*at, "then", axis)
            if isinstance(rule, list):
                for v in rule:
                    self._check_value(axes, axis, v, line_at, what=f"{where(at)}.then")
                allow[axis] = tuple(rule)
                continue
            allow[axis] = dict(rule)
            if axis not in axes:
                self._check_value(axes, axis, "", line_at, what=f"{where(at)}.then")
                continue
            for bound in rule.values():
                if tags.version_key(bound) is None:
                    self.problems.add(self.line(*line_at), f"{where(at)}.then.{axis}: '{bound}' "
                                      "is not a version like 8 or 11.8")
            odd = [v for v in axes[axis].values if tags.version_key(v) is None]
            if odd:
                self.problems.add(self.line(*line_at), f"{where(at)}.then.{axis} compares "
                                  f"versions, but {', '.join(odd)} of axis {axis} are not "
                                  "versions; list the allowed values instead")
        return Constraint(when, allow, raw["reason"], self.line(*at))

    # -- images -------------------------------------------------------------------------
    def _image(self, index: int, raw: dict, axes: dict, repositories: dict) -> Image:
        at = ("images", index)
        name = raw["name"]
        label = f"image {name}"
        spanned = {}
        for axis, values in raw["axes"].items():
            ok = [v for v in values
                  if self._check_value(axes, axis, v, (*at, "axes", axis), what=label)]
            spanned[axis] = tuple(ok)
        extras: set[str] = set()
        include = []
        for j, entry in enumerate(raw.get("include", [])):
            for key, value in entry.items():
                if key in axes:
                    self._check_value(axes, key, value, (*at, "include", j, key),
                                      what=f"{label} include")
                else:
                    extras.add(key)
            include.append(Combination(dict(entry), self.line(*at, "include", j)))
        exclude = []
        for j, entry in enumerate(raw.get("exclude", [])):
            for key, value in entry.items():
                self._check_value(axes, key, value, (*at, "exclude", j, key),
                                  what=f"{label} exclude")
            exclude.append(Combination(dict(entry), self.line(*at, "exclude", j)))
        base = raw.get("base")
        if isinstance(base, str):
            base = BaseRef(base, None, self.line(*at, "base"))
        elif isinstance(base, dict):
            match = tuple(base["match"]) if "match" in base else None
            for axis in match or ():
                if axis not in axes:
                    self.problems.add(self.line(*at, "base", "match"),
                                      f"{label} base.match: there is no axis '{axis}'")
            base = BaseRef(base["image"], match, self.line(*at, "base"))
        recipe, inputs, recipe_file = self._check_recipe(raw, at, label)
        self._check_base_of_definition(base, recipe_file, label)
        upstream = tuple(raw.get("upstream", []))
        self._check_upstream(upstream, at, raw, axes)
        template = raw.get("tag", "{name}-{default}" if raw["kind"] == "app" else "{default}")
        tag_line = self.line(*at, "tag") if "tag" in raw else self.line(*at)
        for problem in tags.check_template(template, tags.template_fields(axes, extras)):
            self.problems.add(tag_line, f"{label} tag '{template}': {problem}")
        return Image(
            name=name, kind=raw["kind"], description=raw.get("description", ""),
            recipe=recipe,
            repository=raw.get("repository", repositories[raw["kind"]]),
            axes=spanned, include=tuple(include), exclude=tuple(exclude), base=base,
            tag=template, inputs=inputs,
            line=self.line(*at), tag_line=tag_line, upstream=upstream, recipe_file=recipe_file,
            commands=tuple(raw["commands"]) if "commands" in raw else None,
        )

    def _check_recipe(self, raw: dict, at: tuple, label: str) -> tuple[str, tuple, str]:
        """The recipe folder, the inputs, normalised, and the recipe file's name; problems
        when one is missing or leaves the catalogue's folder, when the folder holds both or
        neither recipe, or when the test.sh could start a definition-file section."""
        recipe = self._inside(raw["recipe"].rstrip("/") or ".", (*at, "recipe"))
        found = []
        if recipe is None:
            pass
        elif not self.tree.is_dir(recipe):
            self.problems.add(self.line(*at, "recipe"), f"{label}: recipe folder '{recipe}' does "
                              "not exist; create it (with a Dockerfile or a recipe.def) or fix "
                              "the path, which is relative to matrix.yaml")
        else:
            found = [name for name in RECIPES if self.tree.exists(f"{recipe}/{name}")]
            if len(found) != 1:
                # Both: which one is built would be a guess, and a reviewer reads the other.
                self.problems.add(self.line(*at, "recipe"), f"{label}: recipe folder '{recipe}' "
                                  + ("has both a Dockerfile and a recipe.def; keep one"
                                     if found else "has no Dockerfile and no recipe.def; add "
                                     "one (images/README.md)"))
            else:
                self._check_test_script(recipe, label)
        inputs = []
        for j, extra in enumerate(raw.get("inputs", [])):
            path = self._inside(extra.rstrip("/") or ".", (*at, "inputs", j))
            if path is not None and not self.tree.exists(path):
                self.problems.add(self.line(*at, "inputs", j), f"{label}: input '{extra}' does "
                                  "not exist; fix the path, which is relative to matrix.yaml")
            inputs.append(path or extra)
        return (recipe or raw["recipe"].rstrip("/"), tuple(inputs),
                found[0] if len(found) == 1 else RECIPES[0])

    def _check_base_of_definition(self, base: BaseRef | None, recipe_file: str,
                                  label: str) -> None:
        """No ``base:`` for a recipe.def: what an image is built FROM has one source of truth,
        its definition file's From: lines (a tag of this catalogue there becomes a need)."""
        if base is not None and recipe_file == "recipe.def":
            self.problems.add(base.line, f"{label}: its recipe is a definition file, whose "
                              "From: lines name its bases (a tag of this catalogue becomes a "
                              "need); delete base:")

    def _inside(self, path: str, at: tuple) -> str | None:
        """``path`` with ``.`` and ``..`` resolved, or None (and a problem) when it leaves
        the catalogue's folder: absolute, ``..`` past the top, or, in a tree on disk, a
        symlink on the way or below it that points outside."""
        norm = posixpath.normpath(path)
        if path.startswith("/") or norm == ".." or norm.startswith("../"):
            self.problems.add(self.line(*at), f"{where(at)}: '{path}' {LEAVES}")
            return None
        root = getattr(self.tree, "root", None)
        if root is None:  # a git revision: no symlink is followed there
            return norm
        escape = _symlink_out_of(Path(root), norm)
        if escape is not None:
            self.problems.add(self.line(*at), f"{where(at)}: '{path}' {LEAVES} (the symlink "
                              f"{escape} points outside)")
            return None
        return norm

    def _check_test_script(self, recipe: str, label: str) -> None:
        """The recipe's test.sh becomes the SIF's %test.  Apptainer starts a new section at
        any line whose first word begins with '%', indented or not, so such a line would
        give the definition file a section of its own (a %setup runs as root on the build
        host): refused, with its line."""
        script = self.tree.read_text(f"{recipe}/test.sh")
        if not script:
            return
        shown = os.path.join(os.path.dirname(self.doc.file), recipe, "test.sh")
        self.problems.extend([Problem(shown, number, (
            f"'{word}' would start a section of the SIF's definition file, where this script "
            f"is the %test of {label}: Apptainer reads any line whose first word starts with "
            "'%' as a section header, indented or not; rewrite the line so that its first "
            "word does not start with '%' (e.g. quote it)")) for number, word in
            section_lines(script)])

    def _check_upstream(self, upstream: tuple, at: tuple, raw: dict, axes: dict) -> None:
        """Each ``upstream`` template uses only fields every cell of the image has: the axes,
        and attributes that every value the image can take on that axis gives."""
        allowed = _upstream_fields(raw, axes)
        for j, template in enumerate(upstream):
            spot = (*at, "upstream", j)
            try:
                parsed = list(string.Formatter().parse(template))
            except ValueError as err:
                self.problems.add(self.line(*spot), f"{where(spot)}: '{template}': {err}; write "
                                  "{{ or }} for a literal brace")
                continue
            for _, field, spec, conversion in parsed:
                if field is None:
                    continue
                if field not in allowed:
                    self.problems.add(self.line(*spot), f"{where(spot)}: unknown field "
                                      f"{{{field}}} in '{template}'; use one of "
                                      f"{', '.join(sorted(allowed))} (variables every cell of "
                                      "the image has)")
                elif spec or conversion:
                    self.problems.add(self.line(*spot), f"{where(spot)}: {{{field}}} must be a "
                                      "plain field, without ':' or '!'")
            head = parsed[0][0] if parsed else ""
            if parsed and (parsed[0][1] is None or head) and not head.startswith(
                    ("http://", "https://")):
                self.problems.add(self.line(*spot), f"{where(spot)}: '{template}' is not an "
                                  "http:// or https:// URL")

    def _check_images(self, images: tuple, axes: dict) -> None:
        seen: dict[str, Image] = {}
        for image in images:
            if image.name in seen:
                self.problems.add(image.line, f"image name '{image.name}' is used twice (first at "
                                  f"line {seen[image.name].line}); rename one")
            seen.setdefault(image.name, image)
        for image in images:
            if image.base and image.base.image not in seen:
                self.problems.add(image.base.line, f"image {image.name}: base image "
                                  f"'{image.base.image}' is not in images; use one of "
                                  f"{', '.join(seen)}")


def _upstream_fields(raw: dict, axes: dict) -> set:
    """Variables every cell of the image ``raw`` has: each axis, and ``<axis>_<attr>`` when
    every value the image can take on that axis (spanned, from include entries, or any
    value of an axis it does not span) gives ``attr``."""
    fields = set()
    for name, axis in axes.items():
        fields.add(name)
        if name in raw["axes"]:
            keys = set(raw["axes"][name]) | {e[name] for e in raw.get("include", []) if name in e}
        else:
            keys = set(axis.values)
        values = [axis.values[k] for k in keys if k in axis.values]
        if values:
            common = set.intersection(*(set(v.attrs) for v in values))
            fields.update(f"{name}_{attr}" for attr in common)
    return fields


def _symlink_out_of(root: Path, rel: str) -> str | None:
    """The first symlink on the way to ``root/rel``, or below it, that resolves outside
    ``root``, as 'LINK -> TARGET'; None when there is none."""
    top = root.resolve()
    if not (root / rel).resolve().is_relative_to(top):
        probe = root
        for part in Path(rel).parts:
            probe = probe / part
            if probe.is_symlink() and not probe.resolve().is_relative_to(top):
                return f"{probe.relative_to(root).as_posix()} -> {os.readlink(probe)}"
        return rel
    real = (root / rel).resolve()
    if real.is_dir():
        for folder, dirs, names in os.walk(real):
            for name in sorted(dirs + names):
                entry = Path(folder) / name
                if entry.is_symlink() and not entry.resolve().is_relative_to(top):
                    return f"{entry.relative_to(top).as_posix()} -> {os.readlink(entry)}"
    return None
