"""No secret value leaves the factory: not in a file under out/, not on the console.

Secrets are planted in PIPELINE_REGISTRY_PASSWORD and PIPELINE_LIBRARY_TOKEN and made to
appear in a job's failure reason, a log line, a publish error and a factory error; then
every file under the out folder and everything printed is searched for them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote

import pytest

from pipeline.console import make_console
from pipeline.errors import EXIT_FACTORY_BROKE, EXIT_JOB_FAILED
from pipeline.run import publishing, scheduler
from pipeline.stages import convert as convert_stage
from pipeline.tools.credentials import Masker, Secrets
from tests.unit.test_exit_codes import APP, fake_built, fake_publish, lab, run

__all__ = ["lab"]  # the fixture, imported for these tests

PASSWORD = "pw-9f8e7d6c-Secret"
TOKEN = "tok/en+With Spaces&=xyz"  # URL-encodes differently
SECRETS = {"PIPELINE_REGISTRY_USERNAME": "robot", "PIPELINE_REGISTRY_PASSWORD": PASSWORD,
           "PIPELINE_LIBRARY_TOKEN": TOKEN}


def leaked(text: str) -> list[str]:
    forms = [PASSWORD, TOKEN, quote(TOKEN, safe=""), json.dumps(TOKEN)[1:-1],
             base64.b64encode(f"robot:{PASSWORD}".encode()).decode()]
    return [form for form in forms if form in text]


def files_under(folder: Path) -> dict:
    return {p: p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def secrets(lab, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return lab


def test_secrets_are_masked_in_every_file_and_on_the_console(secrets, monkeypatch, capsys):
    lab = secrets

    def build(job, needs, ctx, log, **_):
        log(f"pushing with Authorization: Basic "
            f"{base64.b64encode(f'robot:{PASSWORD}'.encode()).decode()}")
        log(f"GET https://registry.test/token?scope=x&token={quote(TOKEN, safe='')}")
        return fake_built(job, needs, ctx, log)

    def convert(job, built, ctx, log):
        log(f"environment: PIPELINE_LIBRARY_TOKEN={TOKEN}")
        if job.arch == "arm64":
            raise RuntimeError(f"conversion broke with password {PASSWORD} and {TOKEN}")
        return SimpleSif(ctx.sif_dir / f"{job.arch}.sif")

    def publish(repository, tag, states, ctx, log):
        log(f"token service said: {json.dumps({'token': TOKEN})}")
        if tag == "app-2022":
            raise RuntimeError(f"https://robot:{PASSWORD}@registry.test/v2/ refused {TOKEN}")
        return fake_publish(repository, tag, states, ctx, log)

    monkeypatch.setattr(scheduler.build_stage, "build", build)
    monkeypatch.setattr(convert_stage, "convert", convert)
    monkeypatch.setattr(publishing, "publish_tag", publish)
    assert run(lab, "--mode", "main") == EXIT_JOB_FAILED
    captured = capsys.readouterr()
    files = files_under(lab.out)
    jobs = {j["id"]: j for j in json.loads((lab.out / "summary.json").read_text())["jobs"]}
    # The secrets were there to leak: in a failure reason, a publish error and log lines.
    assert "conversion broke with password ***" in jobs["t/base:ompi-4.1@arm64"]["reason"]
    assert jobs[APP]["result"] == "failed" and "***@registry.test" in jobs[APP]["reason"]
    assert "PIPELINE_LIBRARY_TOKEN=***" in Path(jobs[APP]["log"]).read_text()
    assert "***" in captured.out and "***" in (lab.out / "junit.xml").read_text()
    for path, text in files.items():
        assert leaked(text) == [], path
    assert leaked(captured.out + captured.err) == []


def test_a_factory_error_log_is_masked(secrets, monkeypatch, capsys):
    lab = secrets

    def broken(self, jobs=None):
        raise RuntimeError(f"scheduler bug near {PASSWORD}")

    monkeypatch.setattr(scheduler.Run, "execute", broken)
    assert run(lab) == EXIT_FACTORY_BROKE
    captured = capsys.readouterr()
    log = lab.out / "logs" / "factory-error.log"
    assert "scheduler bug near ***" in log.read_text()
    assert "scheduler bug near ***" in captured.err
    for path, text in files_under(lab.out).items():
        assert leaked(text) == [], path
    assert leaked(captured.out + captured.err) == []


def test_masker_masks_values_their_encodings_and_the_basic_auth():
    masker = Secrets.from_env(SECRETS).masker()
    basic = base64.b64encode(f"robot:{PASSWORD}".encode()).decode()
    text = f"{PASSWORD} {quote(TOKEN, safe='')} {json.dumps(TOKEN)} Basic {basic}"
    assert leaked(masker(text)) == []
    assert masker.data({"a": [TOKEN, 1, {TOKEN: None}]}) == {"a": ["***", 1, {"***": None}]}
    assert Masker([])("nothing to hide") == "nothing to hide"


def test_a_masked_console_masks_even_what_it_wraps(capsys):
    console = make_console(mask=Masker([PASSWORD]))
    console.width = 20  # the secret would be wrapped over two lines
    console.print(f"a long line that holds {PASSWORD} in the middle")
    console.log(f"and a log line with {PASSWORD}")
    out = capsys.readouterr().out
    assert PASSWORD not in out.replace("\n", "") and "***" in out


class SimpleSif:
    def __init__(self, sif: Path):
        self.sif, self.cached = sif, False

    def to_json(self) -> dict:
        return {"sif": str(self.sif)}
