"""The BuildKit image of the factory's own builder, made from Debian's packages.

A docker-container builder runs ``buildkitd`` (and ``buildctl``, which buildx uses to see
that it is up) from an image, ``moby/buildkit`` from Docker Hub by default.  The lab
reaches Debian's archive and no image registry, and Debian packages no ``buildkitd``
binary, but it ships BuildKit's source: ``golang-github-docker-docker-dev`` has the very
tree Debian's ``docker.io`` engine is built from (with Debian's security patches).  So the
factory compiles the two commands from it, with Debian's Go and Go libraries:

* the libraries Debian does not package (the stargz and fuse-overlayfs snapshotters,
  packageurl-go, go-archvariant, the GitHub Actions cache client, ...) come from the vendor
  folder of the same source package's ``orig-buildkit`` tarball (``apt-get source``; apt
  checks it against the signed Sources index), and only those: everything Debian packages
  is taken from Debian;
* ``go build`` in GOPATH mode, as Debian builds Go (no module proxy needed), static
  (``CGO_ENABLED=0``), as upstream ships it.

The result, ``factory.invalid/buildkit:<key>``, is a Debian minbase with ``runc`` and
``ca-certificates`` plus the two binaries, entry point ``buildkitd``.  Its registry host
``factory.invalid`` can never resolve (RFC 2606), which matters: buildx tries to pull a
builder's image before it uses the local one, so a name on Docker Hub could be taken over
by whoever registers it there.  Made once per host (about 15 minutes, mostly downloads
and the compiler), kept by the engine; ``key`` changes with this recipe.  Sites that reach
Docker Hub may set ``PIPELINE_BUILDKIT_IMAGE=moby/buildkit:buildx-stable-1`` instead.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from pipeline.tools import rootfs
from pipeline.tools.docker_engine import BuildClient
from pipeline.tools.processes import Log

SUITE = "trixie"  # Go 1.24 and the BuildKit of Docker 26
MIRROR = "http://deb.debian.org/debian"
RUNTIME = "runc,ca-certificates"
NAME = "factory.invalid/buildkit"
# Go libraries BuildKit needs beyond what golang-github-docker-docker-dev depends on.
GO_PACKAGES = (
    "golang-go", "golang-github-docker-docker-dev", "golang-github-agext-levenshtein-dev",
    "golang-github-aws-aws-sdk-go-v2-dev", "golang-github-coreos-go-systemd-dev",
    "golang-github-dimchansky-utfbom-dev", "golang-github-gofrs-flock-dev",
    "golang-github-golang-jwt-jwt-dev", "golang-github-google-shlex-dev",
    "golang-github-mitchellh-hashstructure-v2-dev", "golang-github-vbatts-tar-split-dev")
BUILDKIT = "github.com/moby/buildkit"
# Built on top of the minbase root filesystem (stage 0): compile, then a clean stage that
# takes only the binaries.  ``apt-get source`` may fail on the .dsc of a security update
# that a mirror lacks while the tarballs arrive: only the orig-buildkit tarball is used,
# and its presence is checked.
COMPILE = f"""\
RUN set -eux; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends xz-utils {' '.join(GO_PACKAGES)}; \\
    echo "deb-src {MIRROR} {SUITE} main" > /etc/apt/sources.list.d/factory-src.list; \\
    apt-get update; \\
    mkdir -p /src; cd /src; \\
    apt-get source --download-only docker.io || true; \\
    ls docker.io_*.orig-buildkit.tar.xz
RUN set -eux; \\
    cd /src; \\
    tar -xJf docker.io_*.orig-buildkit.tar.xz; \\
    cd buildkit/vendor; \\
    debian=/usr/share/gocode/src; \\
    for d in $(find . -mindepth 3 -maxdepth 3 -type d); do \\
        [ -d "$debian/$d" ] || {{ mkdir -p "/go/src/${{d%/*}}"; cp -r "$d" "/go/src/$d"; }}; \\
    done; \\
    mkdir -p /go/src/github.com/coreos/go-systemd /go/src/github.com/golang-jwt/jwt; \\
    ln -s $debian/github.com/coreos/go-systemd /go/src/github.com/coreos/go-systemd/v22; \\
    ln -s $debian/github.com/golang-jwt/jwt /go/src/github.com/golang-jwt/jwt/v4; \\
    version="debian-$(dpkg-query -W -f '${{Version}}' golang-github-docker-docker-dev)"; \\
    export GO111MODULE=off GOPATH=/go:/usr/share/gocode GOCACHE=/tmp/gocache CGO_ENABLED=0; \\
    for cmd in buildkitd buildctl; do \\
        go build -trimpath -o /out/$cmd \\
            -ldflags "-s -w -X {BUILDKIT}/version.Version=$version" {BUILDKIT}/cmd/$cmd; \\
    done; \\
    rm -rf /tmp/gocache /src /go
FROM scratch
ADD rootfs.tar /
COPY --from=0 /out/ /usr/bin/
VOLUME /var/lib/buildkit
ENTRYPOINT ["buildkitd"]
"""


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def key() -> str:
    """The image's: this recipe, root filesystem and compile step."""
    return _key(f"{SUITE}|{MIRROR}|{RUNTIME}|{COMPILE}")


def reference() -> str:
    return f"{NAME}:{key()}"


def present(client: BuildClient, image: str) -> bool:
    return subprocess.run([client.path, "image", "inspect", image], capture_output=True,
                          check=False).returncode == 0


def ensure(lab_dir: Path, client: BuildClient, log: Log) -> str:
    """The factory's BuildKit image, made when the engine does not have it; its reference.

    CalledProcessError when making it fails (the log has the output)."""
    image = reference()
    if present(client, image):
        return image
    log(f"making the BuildKit image {image} from Debian {SUITE}'s packages (once per host)")
    cache = lab_dir / "cache" / "rootfs"
    cache.mkdir(parents=True, exist_ok=True)
    name = f"buildkit-{SUITE}-{_key(f'{SUITE}|{MIRROR}|{RUNTIME}')}.tar"  # the root filesystem's
    tarball = rootfs.bootstrap(cache / name, SUITE, MIRROR, log, include=RUNTIME)
    # The daemon's own builder: the factory's builder is what this image is for.
    rootfs.build_image(client, tarball, image, log, extra=COMPILE)
    return image
