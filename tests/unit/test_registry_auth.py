"""Token authentication against a Docker-Hub-like fake: pulls, pushes, mounts, expiry.

No Docker and no network beyond 127.0.0.1: FakeDockerHub serves its in-memory registry,
and both it and TokenAuth run on clocks the tests move, so nothing sleeps.
"""

from __future__ import annotations

import base64
import json
import threading
from urllib.parse import urljoin

import pytest
import requests

from pipeline.tools.registry.auth import (
    Challenge,
    Scope,
    TokenAuth,
    TokenServiceError,
    TokenServiceUnavailable,
    covers,
    merge_scopes,
    needed_scopes,
    parse_challenge,
)
from tests.fakes.docker_hub import FakeDockerHub, Seen, sha256

MANIFEST = json.dumps({"schemaVersion": 2, "layers": []}).encode()
NOTHING: frozenset[str] = frozenset()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Client:
    """The caller's loop: send with ``header()``; on 401 retry while ``answer()`` agrees."""

    def __init__(self, auth: TokenAuth, session: requests.Session):
        self.auth, self.session = auth, session
        self.sends = 0
        self.gave_up = False  # answer() said a retry cannot help

    def send(self, method: str, url: str, needed: frozenset[str], **kwargs
             ) -> requests.Response:
        self.sends, self.gave_up = 0, False
        given = kwargs.pop("headers", {})
        for _ in range(5):  # bound only as a safety net: answer() must stop it first
            headers = dict(given)
            value = self.auth.header(needed)
            if value:
                headers["Authorization"] = value
            self.sends += 1
            response = self.session.request(method, url, headers=headers, timeout=5,
                                            **kwargs)
            if response.status_code != 401:
                return response
            if not self.auth.answer(response.headers.get("WWW-Authenticate", ""), needed):
                self.gave_up = True
                return response
        raise AssertionError("answer() never stopped agreeing to retry")

    def push_blob(self, url: str, repository: str, data: bytes,
                  needed: frozenset[str] | None = None) -> requests.Response:
        needed = needed_scopes("POST", repository) if needed is None else needed
        started = self.send("POST", f"{url}/v2/{repository}/blobs/uploads/", needed)
        if started.status_code != 202:
            return started
        location = urljoin(url, started.headers["Location"])
        return self.send("PUT", location, needed, params={"digest": sha256(data)}, data=data)


@pytest.fixture
def session():
    with requests.Session() as session:
        session.trust_env = False  # 127.0.0.1 only, whatever proxy the environment names
        yield session


def client(session, username=None, password=None, clock=None) -> Client:
    auth = TokenAuth(username, password, get=session.get, clock=clock or Clock())
    return Client(auth, session)


def errors(hub: FakeDockerHub) -> list[str | None]:
    return [seen.error for seen in hub.requests if seen.status == 401]


# -- parsing --------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "expected"), [
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
     'scope="repository:samalba/my-app:pull,push"',
     Challenge("bearer", {"realm": "https://auth.docker.io/token",
                          "service": "registry.docker.io",
                          "scope": "repository:samalba/my-app:pull,push"})),
    ('BASIC realm="Registry Realm"', Challenge("basic", {"realm": "Registry Realm"})),
    # unquoted values, spaces around "=", names in any case, empty list elements
    ("Bearer Realm=https://r/token , Service = hub,,error=invalid_token",
     Challenge("bearer", {"realm": "https://r/token", "service": "hub",
                          "error": "invalid_token"})),
    ('Bearer realm="say \\"hi\\", then go"', Challenge("bearer",
                                                        {"realm": 'say "hi", then go'})),
    # several challenges joined by requests: the first one only
    ('Bearer realm="https://r/token",service="s", Basic realm="other"',
     Challenge("bearer", {"realm": "https://r/token", "service": "s"})),
    ("Bearer", Challenge("bearer", {})),
    ("", None), ("   ", None), ('realm="no scheme"', None),
])
def test_parse_challenge(header, expected):
    assert parse_challenge(header) == expected


def test_challenge_with_several_scopes_and_an_error():
    challenge = parse_challenge(
        'Bearer realm="https://r/token",service="s",'
        'scope="repository:a/app:pull,push repository:a/base:pull",error="insufficient_scope"')
    assert challenge.scopes == {"repository:a/app:pull,push", "repository:a/base:pull"}
    assert challenge.error == "insufficient_scope"


def test_scopes_merge_per_repository_and_cover_subsets():
    assert merge_scopes({"repository:a:pull"}, {"repository:a:push", "repository:b:pull"}) \
        == {"repository:a:pull,push", "repository:b:pull"}
    assert covers({"repository:a:pull,push"}, {"repository:a:pull"})
    assert not covers({"repository:a:push"}, {"repository:a:pull"})  # push is not pull
    assert not covers({"repository:a:pull,push"}, {"repository:b:pull"})
    assert covers({"repository:a:*"}, {"repository:a:pull,push"})
    assert covers(set(), NOTHING)
    assert needed_scopes("HEAD", "a") == {"repository:a:pull"}
    assert needed_scopes("POST", "a", mount_from="b") == {"repository:a:pull,push",
                                                          "repository:b:pull"}
    assert Scope.parse("repository:localhost:5000/x:pull") == Scope(
        "repository", "localhost:5000/x", frozenset({"pull"}))


# -- Basic ----------------------------------------------------------------------------

def test_basic_challenge_is_answered_once_with_the_credentials():
    auth = TokenAuth("robot", "pw", get=None)
    assert auth.header(NOTHING) is None
    assert auth.answer('Basic realm="registry"', NOTHING)
    assert auth.header(NOTHING) == "Basic " + base64.b64encode(b"robot:pw").decode()
    assert not auth.answer('Basic realm="registry"', NOTHING)  # sent and refused
    assert not TokenAuth().answer('Basic realm="registry"', NOTHING)  # nothing to send


# -- against the fake Docker Hub ------------------------------------------------------

def test_anonymous_pull_of_a_public_repository(session):
    with FakeDockerHub() as hub:
        hub.add_manifest("library/hello", "latest", MANIFEST)
        anonymous = client(session)
        url = f"{hub.url}/v2/library/hello/manifests/latest"
        assert anonymous.send("GET", url, needed_scopes("GET", "library/hello")).content \
            == MANIFEST
        assert anonymous.send("GET", url, needed_scopes("GET", "library/hello")).ok
        assert anonymous.sends == 1  # the token was kept
        assert [(t.scopes, t.authenticated) for t in hub.token_requests] == [
            (("repository:library/hello:pull",), False)]


def test_anonymous_push_is_refused_without_looping(session):
    with FakeDockerHub() as hub:
        anonymous = client(session)
        response = anonymous.push_blob(hub.url, "library/hello", b"layer")
        assert response.status_code == 401
        assert anonymous.gave_up
        assert anonymous.sends == 2  # challenge, then the pull-only token: refused
        assert errors(hub) == [None, "insufficient_scope"]
        assert sha256(b"layer") not in hub.blobs
        # a private repository is refused to anonymous pulls the same way
        hub.add_manifest("robot/secret", "v1", MANIFEST)
        response = anonymous.send("GET", f"{hub.url}/v2/robot/secret/manifests/v1",
                                  needed_scopes("GET", "robot/secret"))
        assert response.status_code == 401
        assert anonymous.gave_up


def test_push_after_pull_widens_the_token_on_insufficient_scope(session):
    with FakeDockerHub() as hub:
        robot = client(session, "robot", "pw")
        blob = f"{hub.url}/v2/robot/app/blobs/{sha256(b'layer')}"
        assert robot.send("HEAD", blob, needed_scopes("HEAD", "robot/app")).status_code \
            == 404
        # A caller that does not say what it needs sends the pull token, as Docker's own
        # client does; Docker Hub then refuses with insufficient_scope.
        assert robot.push_blob(hub.url, "robot/app", b"layer", needed=NOTHING
                               ).status_code == 201
        assert "insufficient_scope" in errors(hub)
        assert [t.scopes for t in hub.token_requests] == [
            ("repository:robot/app:pull",), ("repository:robot/app:pull,push",)]
        assert all(t.authenticated for t in hub.token_requests)
        assert robot.send("GET", blob, needed_scopes("GET", "robot/app")).content == b"layer"


def test_push_that_says_what_it_needs_gets_pull_push_at_once(session):
    with FakeDockerHub() as hub:
        robot = client(session, "robot", "pw")
        assert robot.push_blob(hub.url, "robot/app", b"{}").status_code == 201
        put = robot.send("PUT", f"{hub.url}/v2/robot/app/manifests/v1",
                         needed_scopes("PUT", "robot/app"), data=MANIFEST,
                         headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert put.status_code == 201
        assert put.headers["Docker-Content-Digest"] == sha256(MANIFEST)
        assert len(hub.token_requests) == 1
        assert robot.send("GET", f"{hub.url}/v2/robot/app/manifests/v1",
                          needed_scopes("GET", "robot/app")).content == MANIFEST


def test_expired_token_is_refreshed_transparently(session):
    hub_clock = Clock()
    with FakeDockerHub(token_lifetime=3.0, clock=hub_clock) as hub:
        hub.add_manifest("robot/app", "v1", MANIFEST)
        robot = client(session, "robot", "pw")
        url = f"{hub.url}/v2/robot/app/manifests/v1"
        assert robot.send("GET", url, needed_scopes("GET", "robot/app")).ok
        hub_clock.now += 10  # the hub says it expired; our clock does not know yet
        response = robot.send("GET", url, needed_scopes("GET", "robot/app"))
        assert response.content == MANIFEST
        assert errors(hub)[-1] == "invalid_token"
        assert len(hub.token_requests) == 2


def test_token_is_renewed_before_it_expires(session):
    clock = Clock()
    with FakeDockerHub(token_lifetime=3.0, clock=clock) as hub:
        hub.add_manifest("robot/app", "v1", MANIFEST)
        robot = client(session, "robot", "pw", clock=clock)
        url = f"{hub.url}/v2/robot/app/manifests/v1"
        assert robot.send("GET", url, needed_scopes("GET", "robot/app")).ok
        clock.now += 2.5
        assert robot.send("GET", url, needed_scopes("GET", "robot/app")).ok
        assert len(hub.token_requests) == 1  # still good
        clock.now += 0.3  # within 10% of the end: renewed before the hub refuses it
        assert robot.send("GET", url, needed_scopes("GET", "robot/app")).ok
        assert len(hub.token_requests) == 2
        assert "invalid_token" not in errors(hub)


def test_tokens_refused_as_soon_as_issued_stop_the_retries(session):
    with FakeDockerHub(token_lifetime=0.0) as hub:  # every token is already expired
        hub.add_manifest("robot/app", "v1", MANIFEST)
        robot = client(session, "robot", "pw")
        response = robot.send("GET", f"{hub.url}/v2/robot/app/manifests/v1",
                              needed_scopes("GET", "robot/app"))
        assert response.status_code == 401
        assert robot.gave_up
        assert len(hub.token_requests) == 2  # one renewal, not an endless series


def test_mount_asks_for_pull_on_the_source(session):
    with FakeDockerHub() as hub:
        robot = client(session, "robot", "pw")
        assert robot.push_blob(hub.url, "robot/base", b"layer").status_code == 201
        assert robot.push_blob(hub.url, "robot/app", b"config").status_code == 201
        digest = sha256(b"layer")
        mount = f"{hub.url}/v2/robot/app/blobs/uploads/?mount={digest}&from=robot/base"
        # a caller that only names the target repository: the hub asks for the source too
        assert robot.send("POST", mount, needed_scopes("POST", "robot/app")).status_code \
            == 201
        assert errors(hub)[-1] == "insufficient_scope"
        assert set(hub.token_requests[-1].scopes) == {"repository:robot/app:pull,push",
                                                      "repository:robot/base:pull"}
        # one that says what a mount needs gets it without a refusal
        mount = f"{hub.url}/v2/robot/other/blobs/uploads/?mount={digest}&from=robot/base"
        refusals = len(errors(hub))
        response = robot.send("POST", mount, needed_scopes("POST", "robot/other",
                                                           mount_from="robot/base"))
        assert response.status_code == 201
        assert len(errors(hub)) == refusals + 1  # the plain challenge of a new scope set
        assert robot.send("GET", f"{hub.url}/v2/robot/other/blobs/{digest}",
                          needed_scopes("GET", "robot/other")).content == b"layer"


def test_mount_from_a_repository_we_cannot_read_falls_back_to_an_upload(session):
    with FakeDockerHub(users={"robot": "pw", "other": "pw2"}) as hub:
        digest = hub.add_blob("other/secret", b"layer")
        robot = client(session, "robot", "pw")
        response = robot.send("POST", f"{hub.url}/v2/robot/app/blobs/uploads/"
                              f"?mount={digest}&from=other/secret",
                              needed_scopes("POST", "robot/app", mount_from="other/secret"))
        assert response.status_code == 202  # not mounted, but not refused either
        assert not robot.gave_up
        put = robot.send("PUT", urljoin(hub.url, response.headers["Location"]),
                         needed_scopes("PUT", "robot/app"), params={"digest": digest},
                         data=b"layer")
        assert put.status_code == 201


def test_token_service_503_is_transient_and_a_retry_succeeds(session):
    with FakeDockerHub(token_503_every=2) as hub:
        robot = client(session, "robot", "pw")
        hub.add_manifest("robot/app", "v1", MANIFEST)
        assert robot.send("GET", f"{hub.url}/v2/robot/app/manifests/v1",
                          needed_scopes("GET", "robot/app")).ok
        with pytest.raises(TokenServiceUnavailable) as caught:
            robot.push_blob(hub.url, "robot/app", b"layer")
        assert caught.value.retry_after == 1.0
        assert "HTTP 503" in str(caught.value)
        assert robot.push_blob(hub.url, "robot/app", b"layer").status_code == 201


class Answer:
    """What a token service might send back, for the failures the fake does not make."""

    def __init__(self, status: int, body: str, headers: dict | None = None):
        self.status_code, self.text, self.headers = status, body, headers or {}

    def json(self):
        return json.loads(self.text)


CHALLENGE = ('Bearer realm="https://robot:pw@auth.example/token?x=1",service="hub",'
             'scope="repository:robot/app:pull"')


@pytest.mark.parametrize(("answer", "error", "message"), [
    (Answer(200, "<html>s3cret-token</html>"), TokenServiceError, "not JSON"),
    (Answer(200, '{"details": "s3cret-token"}'), TokenServiceError, "without a token"),
    (Answer(200, '["s3cret-token"]'), TokenServiceError, "without a token"),
    (Answer(404, ""), TokenServiceError, "unexpected HTTP 404"),
    (Answer(429, "", {"Retry-After": "7"}), TokenServiceUnavailable, "HTTP 429"),
    (requests.ConnectionError("refused"), TokenServiceUnavailable, "connection failed"),
])
def test_unusable_token_answers_give_plain_errors_without_secrets(answer, error, message):
    def get(url, **kwargs):
        if isinstance(answer, Exception):
            raise answer
        return answer

    auth = TokenAuth("robot", "s3cret-pw", get=get)
    with pytest.raises(error, match=message) as caught:
        auth.answer(CHALLENGE, needed_scopes("GET", "robot/app"))
    text = str(caught.value)
    assert "https://auth.example/token" in text
    for secret in ("s3cret-pw", "s3cret-token", "robot:pw"):
        assert secret not in text
        assert secret not in repr(caught.value)
    # no chained JSONDecodeError or KeyError quoting the body
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    if isinstance(caught.value, TokenServiceUnavailable) and "429" in text:
        assert caught.value.retry_after == 7.0


def test_expires_in_defaults_to_60_seconds():
    clock = Clock()
    auth = TokenAuth(get=lambda url, **kw: Answer(200, '{"token": "abc"}'), clock=clock)
    needed = needed_scopes("GET", "robot/app")
    assert auth.answer(CHALLENGE, needed)
    clock.now += 54
    assert auth.header(needed) == "Bearer abc"
    clock.now += 1  # 5 s before the end: renew
    assert auth.header(needed) is None


def test_wrong_password_is_refused(session):
    with FakeDockerHub() as hub:
        hub.add_manifest("robot/app", "v1", MANIFEST)
        robot = client(session, "robot", "wrong")
        response = robot.send("GET", f"{hub.url}/v2/robot/app/manifests/v1",
                              needed_scopes("GET", "robot/app"))
        assert response.status_code == 401
        assert robot.gave_up
        assert [(t.user, t.authenticated, t.status) for t in hub.token_requests] == [
            ("robot", False, 401)]


def test_password_and_tokens_stay_out_of_reprs_and_messages(session):
    with FakeDockerHub(users={"robot": "s3cret-pw"}, token_503_every=2) as hub:
        robot = client(session, "robot", "s3cret-pw")
        assert robot.push_blob(hub.url, "robot/app", b"layer").status_code == 201
        assert robot.send("GET", f"{hub.url}/v2/robot/app/blobs/{sha256(b'layer')}",
                          needed_scopes("GET", "robot/app")).ok
        with pytest.raises(TokenServiceUnavailable) as caught:
            robot.push_blob(hub.url, "robot/other", b"layer")
        shown = " ".join([repr(robot.auth), str(caught.value), repr(caught.value)])
        assert "***" in repr(robot.auth)
        for secret in ["s3cret-pw", *hub.tokens]:
            assert secret not in shown


def test_threads_refused_together_share_one_token(session):
    with FakeDockerHub() as hub:
        hub.add_manifest("robot/app", "v1", MANIFEST)
        auth = TokenAuth("robot", "pw", get=session.get, clock=Clock())
        results: list[int] = []

        def pull():
            with requests.Session() as own:
                own.trust_env = False
                response = Client(auth, own).send(
                    "GET", f"{hub.url}/v2/robot/app/manifests/v1",
                    needed_scopes("GET", "robot/app"))
                results.append(response.status_code)

        threads = [threading.Thread(target=pull) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [200] * 8
        assert len(hub.token_requests) == 1


# -- the fake's own registry ----------------------------------------------------------

def test_fake_checks_digests_and_takes_chunked_uploads(session):
    with FakeDockerHub() as hub:
        robot = client(session, "robot", "pw")
        needed = needed_scopes("POST", "robot/app")
        assert robot.push_blob(hub.url, "robot/app", b"layer", needed).status_code == 201
        started = robot.send("POST", f"{hub.url}/v2/robot/app/blobs/uploads/", needed)
        location = urljoin(hub.url, started.headers["Location"])
        for piece in (b"chunk one, ", b"chunk two"):
            patched = robot.send("PATCH", location, needed, data=piece)
            assert patched.status_code == 202
            location = urljoin(hub.url, patched.headers["Location"])
        assert patched.headers["Range"] == "0-19"
        wrong = robot.send("PUT", location, needed, params={"digest": sha256(b"other")})
        assert wrong.status_code == 400
        assert wrong.json()["errors"][0]["code"] == "DIGEST_INVALID"
        put = robot.send("PUT", f"{hub.url}/v2/robot/app/manifests/{sha256(b'x')}", needed,
                         data=MANIFEST)
        assert put.json()["errors"][0]["code"] == "DIGEST_INVALID"
        assert Seen("PUT", f"/v2/robot/app/manifests/{sha256(b'x')}", 400) in hub.requests
