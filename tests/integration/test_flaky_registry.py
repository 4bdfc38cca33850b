"""A whole run, build to publish, with staging and the target behind a flaky registry.

Every registry write of a run goes through the fault-injecting proxy: the OS base lookup,
the build's FROM pull and staging push (the docker CLI), the attestation, the copy to the
target, the SIF upload, the index and the moving tags (the factory's own client).  503s,
429s with Retry-After and dropped connections must cost retries, not the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

from tests.catalogues import init_repo, lab_catalogue, write
from tests.fakes.faulty_proxy import FaultyProxy, blob_upload, head, manifest_put
from tests.integration.lab import bring_up, run_command, trusted

IMAGES = """\
images:
  - name: flaky
    kind: base
    recipe: images/base/flaky
    axes: {os: [debian12], arch: [amd64]}
    tag: flaky
"""
FILES = {
    "images/base/flaky/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
                                    "COPY .test-run /etc/factory-test-run\n",
    "images/base/flaky/test.sh": "#!/bin/sh\ntest -s /etc/factory-test-run\n",
}





def test_a_run_with_staging_and_target_behind_faults_publishes(tmp_path):
    settings = bring_up()
    namespace = f"factorytest-{uuid.uuid4().hex[:8]}"
    write(tmp_path, lab_catalogue(f"{namespace}/base", f"{namespace}/app", IMAGES),
          {**FILES, "images/base/flaky/.test-run": uuid.uuid4().hex})
    (tmp_path / ".gitignore").write_text("out/\n")
    init_repo(tmp_path)
    schedule = [(blob_upload, "503", 2), (blob_upload, "drop", 1), (manifest_put, "429", 2),
                (manifest_put, "503", 2), (head, "drop", 2)]
    with FaultyProxy(settings.registry, schedule) as proxy:
        # The proxy is the lab's trusted registry for this run: staging and the `local`
        # target alike, with the lab's own login.
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")},
               "PIPELINE_REGISTRY": proxy.address}
        code, summary, output = run_command(tmp_path / "matrix.yaml", tmp_path / "out",
                                            "--mode", "main", env=env)
    assert code == 0, output[-4000:]
    assert all(rule[2] == 0 for rule in proxy.schedule), proxy.schedule  # every fault fired
    methods = {method for _, method, _ in proxy.faults}
    assert {"PUT", "HEAD"} <= methods
    [job] = summary["jobs"]
    assert job["result"] == "passed" and job["stages"]["build"]["cached"] is False
    # The tag, then the catalogue refreshed after it (through the same faults).
    publication, catalog = summary["publications"]
    assert (publication["result"], catalog["result"]) == ("published", "published")
    assert catalog["repository"] == f"{namespace}/catalog"
    # What the target holds is the image built in this run, readable directly.
    body, _, digest = trusted().manifest(f"{namespace}/base", "flaky")
    assert publication["index"].endswith(digest)
    assert [m["digest"] for m in json.loads(body)["manifests"]] == [job["image_digest"]]
    staged = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                             "--creds", f"{trusted().credentials.username}:"
                             f"{trusted().credentials.password}",
                             f"docker://{settings.registry}/factory-staging/{namespace}/base@"
                             f"{job['image_digest']}"], capture_output=True, text=True,
                            check=False)
    assert staged.returncode == 0, staged.stderr
