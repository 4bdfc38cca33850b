"""The catalogue's page in a real browser: Debian's headless Chromium driven by Selenium
through Debian's chromedriver (never a downloaded browser: ``.ci/install-chromium``).

The page is written by ``write_page`` from tests/data/catalog-sample.json into a temporary
folder and served from there by a local ``http.server`` on 127.0.0.1.  The tests count the
cells and read their status classes as the browser rendered them, click copy buttons and
read the browser's clipboard back, and check from the browser's own network log (and the
server's) that the page asked for nothing outside its folder.  A screenshot is kept as a
test artifact: ``$PIPELINE_TEST_ARTIFACTS/catalog-page.png``, else
``out/test-artifacts/catalog-page.png``.
"""

import hashlib
import json
import os
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.published.html import write_page

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test dependency: "
                                "pip install -e '.[test]'")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "tests" / "data" / "catalog-sample.json"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="Debian's chromium and chromium-driver are not installed (/usr/bin/chromium, "
           "/usr/bin/chromedriver): run .ci/install-chromium")

# The machine's network is closed; without these Chromium tries Google's services at start.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]


def recording_handler(folder: Path, requests: list):
    """A handler serving ``folder`` that records every request (path, status)."""

    class Recording(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_request(self, code="-", size="-"):
            requests.append((self.path, int(code) if str(code).isdigit() else code))

        def log_message(self, *args):
            pass

    return Recording


@pytest.fixture(scope="module")
def catalog() -> dict:
    return json.loads(SAMPLE.read_text())


@pytest.fixture(scope="module")
def site(catalog, tmp_path_factory):
    """The page's folder, served on 127.0.0.1; yields (base URL, the server's requests)."""
    folder = tmp_path_factory.mktemp("site")
    shutil.copy(SAMPLE, folder / "catalog.json")
    write_page(catalog, folder, hashlib.sha256(SAMPLE.read_bytes()).hexdigest())
    requests: list = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), recording_handler(folder, requests))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", requests
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def open_page(browser, base: str):
    browser.get(base + "index.html")
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script("return document.readyState") == "complete")
    return browser


def cell(browser, image: dict):
    for element in browser.find_elements(By.CSS_SELECTOR, "article.cell"):
        if element.find_element(By.CSS_SELECTOR, "code.tag").text == image["tag"]:
            return element
    raise AssertionError(f"no cell for {image['tag']}")


def copy_button(browser, image: dict, command: str):
    """The copy button of the command that starts with ``command`` in ``image``'s cell."""
    for row in cell(browser, image).find_elements(By.CSS_SELECTOR, "div.command"):
        if row.find_element(By.TAG_NAME, "code").text.startswith(command):
            return row.find_element(By.CSS_SELECTOR, "button.copy")
    raise AssertionError(f"no {command!r} command in {image['tag']}")


def clipboard(browser) -> str:
    """What the browser's clipboard holds, read with the Clipboard API (granted below)."""
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "(window.realClipboard || navigator.clipboard).readText()"
        ".then(done, (e) => done('clipboard read failed: ' + e));")


def wait_for_clipboard(browser, want: str) -> str:
    deadline, got = time.monotonic() + 5, ""
    while time.monotonic() < deadline:
        got = clipboard(browser)
        if got == want:
            break
        time.sleep(0.1)
    return got


def image(catalog: dict, tag: str) -> dict:
    return next(i for i in catalog["images"] if i["tag"] == tag)


def test_cells_and_their_status(browser, site, catalog):
    base, _ = site
    open_page(browser, base)
    cells = browser.find_elements(By.CSS_SELECTOR, "article.cell")
    assert len(cells) == len(catalog["images"]) == 4
    for entry in catalog["images"]:
        missing = [a for a, v in entry["arches"].items() if not v["sif"]]
        want = "status-incomplete" if missing else "status-ok"
        classes = cell(browser, entry).get_attribute("class").split()
        assert [c for c in classes if c.startswith("status-")] == [want], entry["tag"]
    lammps = cell(browser, image(catalog, "lammps-gnu-2022"))
    assert "status-incomplete" in lammps.get_attribute("class")
    # The stylesheet was applied (it came from the page's folder, under the page's CSP).
    colour = browser.execute_script(
        "return getComputedStyle(arguments[0]).borderLeftColor", lammps)
    assert colour not in ("", "rgb(0, 0, 0)", "rgb(213, 219, 226)")
    # The workload line is there on expanding the cell's details.
    lammps.find_element(By.TAG_NAME, "summary").click()
    reasons = [r.text for r in lammps.find_elements(By.CSS_SELECTOR, "span.reason")]
    assert any(r.startswith("workload: lammps melt: 2 ranks") for r in reasons)


def test_copy_buttons_put_the_command_in_the_clipboard(browser, site, catalog):
    base, _ = site
    open_page(browser, base)
    browser.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": base.rstrip("/"),
        "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    lammps, base_image = image(catalog, "lammps-gnu-2022"), image(catalog, "ompi-4.1")
    cases = [(lammps, "docker pull", f"docker pull {lammps['reference']}"),
             (lammps, "apptainer pull",
              f"apptainer pull {lammps['arches']['amd64']['sif']['reference']}"),
             (base_image, "apptainer pull oras://127.0.0.1:5000/sjtuhpc/"
                          "hpc-base-container-sif:ompi-4.1-arm64",
              f"apptainer pull {base_image['arches']['arm64']['sif']['reference']}")]
    for entry, command, want in cases:
        button = copy_button(browser, entry, command)
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        button.click()
        assert wait_for_clipboard(browser, want) == want
    assert button.text == "copied"

    # Where the Clipboard API is missing (plain http from a host other than localhost is
    # not a secure context), the button copies the selected text instead.
    browser.execute_script(
        "window.realClipboard = navigator.clipboard;"
        "Object.defineProperty(Navigator.prototype, 'clipboard', {get: () => undefined});")
    assert browser.execute_script("return navigator.clipboard") is None
    button = copy_button(browser, lammps, "module load")
    button.click()
    assert wait_for_clipboard(browser, "module load lammps/gnu-2022") == \
        "module load lammps/gnu-2022"


def test_the_filter_finds_lammps_with_open_mpi_on_debian_12(browser, site):
    base, _ = site
    open_page(browser, base)
    browser.find_element(By.ID, "filter").send_keys("lammps open mpi debian 12")
    shown = [c.find_element(By.CSS_SELECTOR, "code.tag").text
             for c in browser.find_elements(By.CSS_SELECTOR, "article.cell") if c.is_displayed()]
    assert shown == ["lammps-gnu-2022"]


def test_every_request_stays_in_the_page_folder(browser, site, catalog):
    base, served = site
    # Every load from the server, none from the cache: the server's list is the whole list.
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    browser.get_log("performance")                     # what earlier tests loaded
    served.clear()
    open_page(browser, base)
    for summary in browser.find_elements(By.TAG_NAME, "summary"):
        browser.execute_script("arguments[0].click()", summary)
    browser.find_element(By.CSS_SELECTOR, "a[href='#image-base']").click()
    time.sleep(0.5)
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert base + "index.html" in urls
    outside = [u for u in urls if not u.startswith(base) and not u.startswith("data:")]
    assert outside == []
    # The server saw the page and its two static files, and found each.
    paths = sorted(path.split("?")[0] for path, _ in served)
    assert paths == ["/index.css", "/index.html", "/index.js"]
    assert all(code == 200 for _, code in served), served
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_screenshot(browser, site, catalog):
    """Kept for a person to look at: the whole page, lammps's details open."""
    base, _ = site
    open_page(browser, base)
    cell(browser, image(catalog, "lammps-gnu-2022")).find_element(By.TAG_NAME,
                                                                  "summary").click()
    browser.execute_script("window.scrollTo(0, 0)")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(max(height, 800), 8000))
    folder = Path(os.environ.get("PIPELINE_TEST_ARTIFACTS") or REPO / "out" / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog-page.png"
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
