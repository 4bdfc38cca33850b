"""The catalogue's page without a browser: what it lists, the commands it offers to copy,
that catalogue text stays text, that it asks for nothing outside its folder, and that the
same catalogue gives the same bytes.  (tests/integration/test_catalog_browser.py clicks it
in a real Chromium.)"""

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.published.html import STATIC, write_page

SAMPLE = Path(__file__).parents[1] / "data" / "catalog-sample.json"
VOID = {"meta", "link", "br", "input", "img", "hr", "wbr", "source", "area", "base", "col"}
URL_ATTRIBUTES = {"href", "src", "srcset", "action", "formaction", "poster", "data",
                  "background", "cite", "longdesc", "manifest", "ping", "xlink:href"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    @property
    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str | None = None, cls: str | None = None) -> list["Node"]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                    found.append(child)
                found += child.all(tag, cls)
        return found


class Tree(HTMLParser):
    """The page as a tree of elements, as an HTML parser (not a regex) sees it."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {})
        self.elements: list[Node] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        self.elements.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


@pytest.fixture
def catalog() -> dict:
    return json.loads(SAMPLE.read_text())


def page(catalog: dict, out: Path, digest: str | None = None) -> Tree:
    return Tree(write_page(catalog, out, digest).read_text())


def cells(tree: Tree) -> dict[str, Node]:
    """Each cell by its tag's text."""
    found = {}
    for cell in tree.root.all("article", "cell"):
        tag = cell.all("code", "tag")[0].text()
        assert tag not in found, f"two cells for {tag}"
        found[tag] = cell
    return found


def commands(cell: Node) -> list[str]:
    return [c.all("code")[0].text() for c in cell.all("div", "command")]


def expected_status(image: dict) -> str:
    arches = image["arches"].values()
    if any(t["result"] == "failed" for a in arches for t in a["tests"]):
        return "status-failed"
    return "status-ok" if all(a["sif"] for a in arches) else "status-incomplete"


def test_one_cell_per_tag_with_its_status(catalog, tmp_path):
    found = cells(page(catalog, tmp_path))
    assert sorted(found) == sorted(i["tag"] for i in catalog["images"])
    statuses = {tag: [c for c in cell.classes if c.startswith("status-")]
                for tag, cell in found.items()}
    assert statuses == {i["tag"]: [expected_status(i)] for i in catalog["images"]}
    assert statuses["lammps-gnu-2022"] == ["status-incomplete"]   # no arm64 SIF
    lammps = found["lammps-gnu-2022"]
    assert "no SIF is published for arm64" in lammps.all("p", "why")[0].text()
    badges = {b.text(): b.classes for b in lammps.all("span", "arch")}
    assert badges == {"amd64": ["arch", "arch-ok"], "arm64": ["arch", "arch-nosif"]}


def test_a_failed_test_shows_and_names_itself(catalog, tmp_path):
    catalog["images"][3]["arches"]["arm64"]["tests"][0]["result"] = "failed"
    base = cells(page(catalog, tmp_path))["ompi-4.1"]
    assert "status-failed" in base.classes
    assert base.all("p", "why")[0].text() == "failed: %test on arm64"


def test_the_workload_line_is_in_the_cell(catalog, tmp_path):
    lammps = cells(page(catalog, tmp_path))["lammps-gnu-2022"]
    reasons = [r.text() for r in lammps.all("span", "reason")]
    assert "workload: lammps melt: 2 ranks, 250 steps, energy -2.2812174 (ref -2.281 +- 0.01)" \
        in reasons
    assert any(r.startswith("host Open MPI 5.0.7 cannot launch") for r in reasons)


def test_pull_commands(catalog, tmp_path):
    found = cells(page(catalog, tmp_path))
    for image in catalog["images"]:
        want = [f"docker pull {image['reference']}"] if image["reference"] else []
        want += [f"apptainer pull {a['sif']['reference']}"
                 for _, a in sorted(image["arches"].items()) if a["sif"]]
        want.append(f"module load {image['module']}")
        assert commands(found[image["tag"]]) == want, image["tag"]
    assert commands(found["lammps-gnu-2022"]) == [
        "docker pull 127.0.0.1:5000/sjtuhpc/hpc-app-container:lammps-gnu-2022",
        "apptainer pull oras://127.0.0.1:5000/sjtuhpc/hpc-app-container-sif:lammps-gnu-2022-amd64",
        "module load lammps/gnu-2022"]
    assert not any(c.startswith("docker") for c in commands(found["pi-mpi-1.0"]))  # SIF only
    for command in tmp_path.joinpath("index.html").read_text().split('class="command"')[1:]:
        assert '<button class="copy" type="button">copy</button>' in command


def test_grids_per_image_with_apps_after_their_base(catalog, tmp_path):
    extra = copy.deepcopy(catalog["images"][3])           # base, Debian 13, MPICH 4.2
    extra.update(tag="gcc-14.mpich-4.2", reference="r/x:gcc-14.mpich-4.2")
    extra["variables"] = {"os": "debian13", "gcc": "14", "mpi": "mpich-4.2", "cuda": "none",
                          "mpi_family": "mpich", "mpi_version": "4.2"}
    catalog["images"].append(extra)
    tree = page(catalog, tmp_path)
    sections = tree.root.all("section", "image")
    assert [s.attrs["id"] for s in sections] == [
        "image-base", "image-lammps", "image-pi_mpi", "image-cuda_debian"]
    base = sections[0]
    header = [th.text() for th in base.all("thead")[0].all("th")]
    assert header == ["OS · compiler", "MPICH 4.2", "Open MPI 4.1"]
    rows = base.all("tbody")[0].all("tr")
    grid = [[row.all("th")[0].text()] + [" ".join(c.all("code", "tag")[0].text()
                                                  for c in td.all("article", "cell"))
                                         for td in row.all("td")] for row in rows]
    assert grid == [["Debian 12 · GCC 12", "", "ompi-4.1"],
                    ["Debian 13 · GCC 14", "gcc-14.mpich-4.2", ""]]
    cuda = sections[3].all("thead")[0].all("th")[1].text()
    assert cuda == "Open MPI 4.1CUDA 11.8"
    # An app cell links to the cell of the base it was built FROM.
    lammps = cells(tree)["lammps-gnu-2022"]
    link = lammps.all("p", "from")[0].all("a")[0]
    assert link.text() == "sjtuhpc/hpc-base-container:ompi-4.1"
    target = [c for c in tree.root.all("article", "cell") if "#" + c.attrs["id"] ==
              link.attrs["href"]]
    assert [t.all("code", "tag")[0].text() for t in target] == ["ompi-4.1"]


def test_catalogue_text_stays_text(catalog, tmp_path):
    lammps = catalog["images"][0]
    lammps["tag"] = "<script>alert(1)</script>"
    lammps["description"] = '<img src=x onerror="alert(2)">'
    lammps["module"] = '"><script src=//evil.example/x.js></script>'
    lammps["arches"]["amd64"]["tests"][0]["reason"] = "</li><iframe src=//evil.example>"
    lammps["arches"]["amd64"]["tests"][1]["result"] = "passed cell status-ok"
    lammps["variables"]["os"] = "<b onmouseover=alert(3)>"
    catalog["target"]["name"] = "</title><script>alert(4)</script>"
    tree = page(catalog, tmp_path)
    tags = {e.tag for e in tree.elements}
    assert not tags & {"img", "iframe", "b"}
    scripts = [e.attrs for e in tree.elements if e.tag == "script"]
    assert scripts == [{"src": scripts[0]["src"], "defer": None}]
    assert scripts[0]["src"].startswith("index.js?")
    assert not [(e.tag, a) for e in tree.elements for a in e.attrs if a.startswith("on")]
    # Shown as the text it is, in one cell (a result cannot add classes to an element).
    found = cells(tree)
    assert len(found) == len(catalog["images"])
    assert "<script>alert(1)</script>" in found
    assert commands(found["<script>alert(1)</script>"])[-1] == \
        'module load "><script src=//evil.example/x.js></script>'
    assert tree.root.all("title")[0].text().startswith("Container catalogue: </title><script>")


def test_no_request_outside_the_page_folder(catalog, tmp_path):
    tree = page(catalog, tmp_path, "0" * 64)
    for element in tree.elements:
        for name, value in element.attrs.items():
            if name in URL_ATTRIBUTES and value:
                assert value == "data:," or not re.match(r"[a-z][a-z0-9+.-]*:|//", value), \
                    f"<{element.tag} {name}={value}> leaves the page's folder"
    csp = [e.attrs["content"] for e in tree.elements
           if e.attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["index.html", *STATIC])
    for name in STATIC:
        text = (tmp_path / name).read_text()
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/|url\(|@import|fetch\(|"
                             r"XMLHttpRequest|WebSocket|EventSource|sendBeacon", text), name
    # The only absolute URL in the page is the catalogue's own data, shown as text: the
    # source repository of each image (not a link, not a request).
    urls = set(re.findall(r"https?://[^\s<\"']+", (tmp_path / "index.html").read_text()))
    assert urls == {i["source"]["url"] for i in catalog["images"]}


def test_digest_registry_and_catalogue_reference_are_shown(catalog, tmp_path):
    text = write_page(catalog, tmp_path, "ab" * 32).read_text()
    assert f"sha256:{'ab' * 32}" in text
    assert "<code>127.0.0.1:5000</code>" in text
    assert "127.0.0.1:5000/sjtuhpc/catalog:latest" in text
    assert write_page(catalog, tmp_path, f"sha256:{'ab' * 32}").read_text() == text


def test_the_same_catalogue_gives_the_same_bytes(catalog, tmp_path):
    write_page(catalog, tmp_path / "a", "ab" * 32)
    shuffled = copy.deepcopy(catalog)
    shuffled["images"].reverse()
    for image in shuffled["images"]:
        image["arches"] = dict(reversed(image["arches"].items()))
        image["variables"] = dict(reversed(image["variables"].items()))
    write_page(shuffled, tmp_path / "b", "ab" * 32)
    for name in ["index.html", *STATIC]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    page_file = tmp_path / "a" / "index.html"
    before = page_file.stat().st_mtime_ns
    write_page(catalog, tmp_path / "a", "ab" * 32)
    assert page_file.stat().st_mtime_ns == before      # unchanged, not rewritten


def test_an_empty_catalogue_is_a_page_that_says_so(tmp_path):
    tree = page({"schema": 1, "target": {"name": "local", "registry": "127.0.0.1:5000"},
                 "images": []}, tmp_path)
    assert cells(tree) == {}
    assert "0 in 0 images" in tree.root.text()
