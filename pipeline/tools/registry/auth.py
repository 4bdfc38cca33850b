"""Registry authentication as the distribution token spec and Docker Hub want it.

References: https://distribution.github.io/distribution/spec/auth/token/ (challenge, token
request and answer), .../spec/auth/scope/ (scope grammar) and RFC 6750 section 3 (the
``error`` values).  The flow, per request:

1. ``header(needed)`` gives the ``Authorization`` value to send, if a cached token covers
   the scopes the request needs (or Basic, when the registry asked for Basic);
2. on a 401, ``answer(www_authenticate, needed)`` gets a token for what the challenge
   asks plus what the request needs, and says whether a retry can succeed.

Example::

    auth = TokenAuth("robot", os.environ["PIPELINE_REGISTRY_PASSWORD"])
    needed = needed_scopes("POST", "sjtuhpc/app")
    ...  # send with auth.header(needed); on 401: if auth.answer(challenge, needed): retry
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import urlsplit

import requests
from requests.auth import HTTPBasicAuth

from pipeline.tools.registry.retries import Transient, retry_after

# The spec: "When omitted, [expires_in] defaults to 60 seconds."
DEFAULT_LIFETIME = 60.0
# Refresh this much before expiry (10% of the lifetime, at most 5 s), so that a token is
# not refused half-way through a sequence of requests.
EARLY_FRACTION = 0.1
EARLY_MAX = 5.0

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 7230 token: scheme and parameter names
_SCHEME = re.compile(rf"\s*({_TOKEN})(?=\s|$)")
_PARAM = re.compile(rf'[\s,]*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')
_READS = frozenset({"GET", "HEAD"})


class TokenServiceError(RuntimeError):
    """The token service answered something unusable; retrying will not help."""


class TokenServiceUnavailable(Transient):
    """The token service is down or busy: worth retrying (after ``retry_after`` seconds)."""


# -- challenges -----------------------------------------------------------------------

@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: the scheme (lower case) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def scopes(self) -> frozenset[str]:
        # One parameter may carry several scopes, space-separated (spec, "scope").
        return frozenset(self.params.get("scope", "").split())

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a ``WWW-Authenticate`` value; None when there is none.

    Parameter names are case-insensitive (RFC 7235); quoted values may hold commas and
    backslash escapes.  Parsing stops at the next challenge when several were joined.
    """
    found = _SCHEME.match(header or "")
    if not found:
        return None
    params: dict[str, str] = {}
    position = found.end()
    while (param := _PARAM.match(header, position)) and param.end() > position:
        quoted, bare = param.group(2), param.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params.setdefault(param.group(1).lower(), value)
        position = param.end()
    return Challenge(found.group(1).lower(), params)


# -- scopes ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    """``type:name:action,action``, e.g. ``repository:sjtuhpc/app:pull,push``."""

    type: str
    name: str
    actions: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        # The name may hold a colon (``localhost:5000/x``) but the type and actions do not.
        kind, _, rest = text.partition(":")
        name, colon, actions = rest.rpartition(":")
        if not (kind and name and colon):
            return None
        return cls(kind, name, frozenset(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


def _by_resource(scopes: Iterable[str]) -> tuple[dict[tuple[str, str], set[str]], set[str]]:
    """Actions per (type, name), and the scopes that do not parse (kept opaque)."""
    merged: dict[tuple[str, str], set[str]] = {}
    opaque: set[str] = set()
    for text in scopes:
        scope = Scope.parse(text)
        if scope is None:
            opaque.add(text)
        else:
            merged.setdefault((scope.type, scope.name), set()).update(scope.actions)
    return merged, opaque


def merge_scopes(*groups: Iterable[str]) -> frozenset[str]:
    """One scope per resource with the union of its actions, in a canonical spelling."""
    merged, opaque = _by_resource(s for group in groups for s in group)
    return frozenset(str(Scope(k, n, frozenset(a))) for (k, n), a in merged.items()) | opaque


def covers(granted: Iterable[str], needed: Iterable[str]) -> bool:
    """True when every needed action is among the granted ones (``*`` grants all).

    Actions imply nothing about each other: ``push`` alone does not cover ``pull``.
    """
    have, have_opaque = _by_resource(granted)
    want, want_opaque = _by_resource(needed)
    return want_opaque <= have_opaque and all(
        "*" in have.get(resource, ()) or actions <= have.get(resource, set())
        for resource, actions in want.items())


def needed_scopes(method: str, repository: str, mount_from: str | None = None
                  ) -> frozenset[str]:
    """What a request needs: reads pull; writes pull and push (as Docker Hub's challenges
    ask); a cross-repository mount also pull on the repository it mounts from."""
    actions = "pull" if method.upper() in _READS else "pull,push"
    scopes = {f"repository:{repository}:{actions}"}
    if mount_from:
        scopes.add(f"repository:{mount_from}:pull")
    return merge_scopes(scopes)


# -- tokens ---------------------------------------------------------------------------

@dataclass(eq=False)
class _Token:
    header: str = field(repr=False)
    scopes: frozenset[str]  # what was asked for: the token is opaque, so that is all we know
    refresh_at: float
    after_refusal: bool  # obtained because the registry refused the previous token
    uses: int = 0


def _lifetime(answer: dict) -> float:
    value = answer.get("expires_in")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_LIFETIME


def _where(realm: str) -> str:
    # Shown in messages: no query and no user-info, whatever the realm URL carries.
    parts = urlsplit(realm)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


class TokenAuth:
    """Credentials for one registry, and the tokens obtained with them.  Thread-safe."""

    def __init__(self, username: str | None = None, password: str | None = None, *,
                 get: Callable[..., requests.Response] | None = None,
                 clock: Callable[[], float] = time.monotonic, timeout: float = 30.0):
        self._username = username
        self._password = password
        self._get = get or requests.get
        self._clock = clock
        self._timeout = timeout
        self._tokens: dict[frozenset[str], _Token] = {}  # requested scope set -> token
        self._basic = False  # the registry asked for Basic rather than tokens
        self._lock = threading.Lock()  # guards _tokens and _basic
        # One token request at a time: threads refused together then share its answer
        # instead of each asking the token service.
        self._fetching = threading.Lock()
        # What this thread last sent, so that answer() knows which token was refused.
        self._sent = threading.local()

    def __repr__(self) -> str:  # never the password or a token, even in a traceback
        return (f"TokenAuth(username={self._username!r}, "
                f"password={'***' if self._password else None}, tokens={len(self._tokens)})")

    @property
    def _has_credentials(self) -> bool:
        return bool(self._username and self._password)

    def _basic_header(self) -> str:
        pair = f"{self._username}:{self._password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def _find(self, needed: frozenset[str]) -> _Token | None:
        """The newest unexpired token covering ``needed``; drops expired ones.  Locked."""
        now = self._clock()
        for key, token in list(self._tokens.items()):
            if now >= token.refresh_at:
                del self._tokens[key]
        for token in reversed(self._tokens.values()):
            if covers(token.scopes, needed):
                return token
        return None

    def header(self, needed: frozenset[str]) -> str | None:
        """The ``Authorization`` value for a request needing ``needed``, or None."""
        with self._lock:
            if self._basic and self._has_credentials:
                value = self._basic_header()
            else:
                token = self._find(needed)
                if token is not None:
                    token.uses += 1
                value = token.header if token else None
        self._sent.value = value
        return value

    def answer(self, challenge_header: str, needed: frozenset[str]) -> bool:
        """Learn from a 401's challenge; True when a retry may now succeed."""
        challenge = parse_challenge(challenge_header)
        sent: str | None = getattr(self._sent, "value", None)
        if challenge is not None and challenge.scheme == "basic":
            return self._answer_basic(sent)
        if challenge is not None and challenge.scheme == "bearer" and \
                challenge.params.get("realm"):
            return self._answer_bearer(challenge, needed, sent)
        return False

    def _answer_basic(self, sent: str | None) -> bool:
        if not self._has_credentials or (sent or "").startswith("Basic "):
            return False  # nothing to send, or it was sent and refused
        with self._lock:
            self._basic = True
        return True

    def _answer_bearer(self, challenge: Challenge, needed: frozenset[str],
                       sent: str | None) -> bool:
        want = merge_scopes(needed, challenge.scopes)
        with self._fetching:
            with self._lock:
                refused = next((t for t in self._tokens.values() if t.header == sent), None)
                if refused is not None and challenge.error != "insufficient_scope":
                    # Expired or revoked (invalid_token, or a registry that says nothing).
                    self._tokens = {k: t for k, t in self._tokens.items() if t is not refused}
                    if refused.after_refusal and refused.uses <= 1:
                        return False  # a replacement refused on first use: no loop
                current = self._find(want)
            if current is not None:
                # Another thread already got a token for this; unless it is the one just
                # refused for lack of scope: asking again would get the same rights.
                return current.header != sent
            token = self._request(challenge, want, after_refusal=sent is not None)
            if token is None or token.header == sent:
                return False
            with self._lock:
                self._tokens.pop(want, None)  # re-inserted last: _find prefers the newest
                self._tokens[want] = token
            return True

    def _request(self, challenge: Challenge, scopes: frozenset[str], *,
                 after_refusal: bool) -> _Token | None:
        """Ask the realm for a token; None when it refuses the credentials."""
        realm = challenge.params["realm"]
        where = _where(realm)
        params = [("service", challenge.params["service"])] if "service" in challenge.params \
            else []
        # The spec allows the scope parameter repeated, one resource scope each.
        params += [("scope", scope) for scope in sorted(scopes)]
        # Anonymous without credentials: Docker Hub grants pull on public repositories.
        auth = HTTPBasicAuth(self._username, self._password) if self._has_credentials else None
        started = self._clock()
        try:
            response = self._get(realm, params=params, auth=auth, timeout=self._timeout)
        except requests.RequestException as err:
            raise TokenServiceUnavailable(
                f"token service {where}: connection failed ({type(err).__name__})") from None
        status = response.status_code
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise TokenServiceUnavailable(f"token service {where}: HTTP {status}",
                                          retry_after(response.headers))
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            return None
        if status != HTTPStatus.OK:
            raise TokenServiceError(f"token service {where}: unexpected HTTP {status}")
        try:
            body = response.json()
        except ValueError:  # the message would quote the body, which may hold a token
            raise TokenServiceError(f"token service {where} answered 200 with a body that "
                                    "is not JSON") from None
        # "access_token" is the OAuth2 name; when both are given Docker's client prefers it.
        value = (body.get("access_token") or body.get("token")) if isinstance(body, dict) \
            else None
        if not isinstance(value, str) or not value:
            raise TokenServiceError(f"token service {where} answered 200 without a token")
        # The lifetime counts from when we asked, on our own clock: never later than the
        # service's issued_at + expires_in, and immune to skew between the two clocks (so
        # issued_at is not needed).
        lifetime = _lifetime(body)
        early = min(EARLY_MAX, EARLY_FRACTION * lifetime)
        return _Token(header=f"Bearer {value}", scopes=scopes,
                      refresh_at=started + lifetime - early, after_refusal=after_refusal)
