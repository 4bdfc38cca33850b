"""The build command's registry cache flags: refs, keys, the pr/trusted boundary, off, the
old client, a site's builder.  No Docker: the argv is assembled and read back."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.errors import InputError
from pipeline.planning.jobs import Job
from pipeline.settings import Settings
from pipeline.stages import build as build_stage
from pipeline.tools import build_cache, buildx
from pipeline.tools.build_cache import FACTORY_BUILDER, Cell, build_command, cache_tag
from pipeline.tools.docker_engine import BuildClient, DockerUnavailable, buildx_config_dir
from pipeline.tools.registry.staging import staging_for

CLIENT = BuildClient("buildx", "/usr/bin/docker", "26.1.5", buildx_config="/home/u/.docker/buildx")
OLD_CLIENT = BuildClient("buildkit", "/usr/bin/docker", "20.10.24")
PLANNED = Job("t/base:ompi-4.1@amd64", "base", "base", "t/base", "ompi-4.1", "amd64",
              {"mpi": "ompi-4.1"}, "images/base/debian", (), "b" * 64)
JOB = Cell.of(PLANNED)
ENV = {"PIPELINE_STAGING_KEY": "k" * 64}


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env(tmp_path, env)


def staging(tmp_path: Path, mode: str, **env: str):
    return staging_for(mode, tmp_path / "lab", "127.0.0.1:5000", "127.0.0.1:5001",
                       {**ENV, **env})


def flags(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


def refs(argv: list[str]) -> list[str]:
    """Every registry reference the cache flags name."""
    return [part.split("=", 1)[1] for flag in ("--cache-from", "--cache-to")
            for value in flags(argv, flag) for part in value.split(",")
            if part.startswith("ref=")]


def test_a_main_build_imports_and_exports_trusted_stagings_cache(tmp_path):
    command = build_command(CLIENT, settings(tmp_path), staging(tmp_path, "main"), JOB)
    ref = "127.0.0.1:5000/factory-staging/cache/t/base:debian-ompi-4.1-amd64"
    assert command.argv == [
        "/usr/bin/docker", "buildx", "build", "--builder", FACTORY_BUILDER, "--load",
        "--provenance=false",
        "--cache-from", f"type=registry,ref={ref}",
        "--cache-to", f"type=registry,ref={ref},mode=max,image-manifest=true,"
                      "oci-mediatypes=true,ignore-error=true"]
    assert command.builder == FACTORY_BUILDER and command.cache_ref == ref
    assert ref in command.note and "trusted staging" in command.note


def test_a_pr_build_uses_pr_stagings_cache_only(tmp_path):
    command = build_command(CLIENT, settings(tmp_path), staging(tmp_path, "pr"), JOB)
    assert refs(command.argv) == [
        "127.0.0.1:5001/factory-staging-pr/cache/t/base:debian-ompi-4.1-amd64"] * 2
    assert "127.0.0.1:5000" not in " ".join(command.argv)
    assert "pr staging" in command.note


@pytest.mark.parametrize("mode", ["pr", "main", "nightly"])
def test_trust_boundary_holds_when_both_stagings_share_one_registry(tmp_path, mode):
    """CI may give pr and trusted staging one registry host: the namespaces keep them apart.
    A pr build writes only under pr staging, a main build reads only trusted staging."""
    both = {"PIPELINE_STAGING": "staging.example.org", "PIPELINE_PR_STAGING": "staging.example.org"}
    run_staging = staging(tmp_path, mode, **both)
    argv = build_command(CLIENT, settings(tmp_path), run_staging, JOB).argv
    own = "staging.example.org/factory-staging-pr/cache/" if mode == "pr" else (
        "staging.example.org/factory-staging/cache/")
    other = "factory-staging/" if mode == "pr" else "factory-staging-pr/"
    assert refs(argv) and all(ref.startswith(own) for ref in refs(argv))
    assert not any(other in ref for ref in refs(argv))


def test_a_cache_outside_the_runs_staging_is_refused(tmp_path, monkeypatch):
    pr = staging(tmp_path, "pr")
    monkeypatch.setattr(build_cache, "cache_ref",
                        lambda *_: "127.0.0.1:5000/factory-staging/cache/t/base:x")
    with pytest.raises(build_cache.CacheOutsideStaging):
        build_cache.cache_flags(pr, JOB)


def test_the_key_is_recipe_cell_and_arch_never_the_build_id(tmp_path):
    pr = staging(tmp_path, "pr")
    rebuilt = replace(PLANNED, build_id="c" * 64)  # a changed recipe or base: the same cache
    assert build_cache.cache_ref(pr, Cell.of(rebuilt)) == build_cache.cache_ref(pr, JOB)
    others = [replace(JOB, arch="arm64"), replace(JOB, tag="none"),
              replace(JOB, recipe="images/base/rocky"),
              replace(JOB, repository="t/app")]
    seen = {build_cache.cache_ref(pr, job) for job in [JOB, *others]}
    assert len(seen) == 1 + len(others)


def test_a_long_or_odd_key_is_still_a_valid_unique_tag():
    long_a = replace(JOB, tag="x" * 200 + "a")
    long_b = replace(JOB, tag="x" * 200 + "b")
    for job in (long_a, long_b, replace(JOB, recipe="images/app/+odd name")):
        tag = cache_tag(job)
        assert len(tag) <= build_cache.MAX_TAG
        assert tag.endswith("-amd64")
        assert re.fullmatch(r"\w[\w.-]{0,127}", tag)  # the OCI distribution spec's tag
    assert cache_tag(long_a) != cache_tag(long_b)


def test_off_builds_with_the_engines_builtin_buildkit_and_no_cache(tmp_path):
    command = build_command(CLIENT, settings(tmp_path, PIPELINE_BUILD_CACHE="off"),
                            staging(tmp_path, "main"), JOB)
    assert command.argv == ["/usr/bin/docker", "buildx", "build", "--load"]
    assert command.builder is None and command.cache_ref is None
    assert "PIPELINE_BUILD_CACHE=off" in command.note


def test_a_client_without_buildx_builds_without_cache_flags_and_says_why(tmp_path):
    command = build_command(OLD_CLIENT, settings(tmp_path), staging(tmp_path, "main"), JOB)
    assert command.argv == ["/usr/bin/docker", "build"]
    assert command.builder is None and not refs(command.argv)
    assert "cannot export a registry cache" in command.note


def test_a_sites_builder_is_used_as_it_is(tmp_path):
    site = settings(tmp_path, PIPELINE_BUILDX_BUILDER="arm-native")
    command = build_command(CLIENT, site, staging(tmp_path, "pr"), JOB)
    assert flags(command.argv, "--builder") == ["arm-native"]
    assert refs(command.argv)  # the same cache, through that builder
    assert "PIPELINE_BUILDX_BUILDER" in command.note


def test_a_missing_sites_builder_is_an_infrastructure_failure(tmp_path, monkeypatch):
    site = settings(tmp_path, PIPELINE_BUILDX_BUILDER="nowhere")
    monkeypatch.setattr(buildx, "builder_image", lambda client, name: None)
    command = build_command(CLIENT, site, staging(tmp_path, "pr"), JOB)
    with pytest.raises(DockerUnavailable, match="no buildx builder 'nowhere'"):
        buildx.prepare(command, CLIENT, site, lambda line: None)


def test_the_build_stage_assembles_the_argv_and_logs_the_cache(tmp_path, monkeypatch):
    prepared = []
    monkeypatch.setattr(buildx, "prepare", lambda command, *_: prepared.append(command.builder))
    ctx = SimpleNamespace(client=CLIENT, settings=settings(tmp_path),
                          staging=staging(tmp_path, "pr"))
    lines: list[str] = []
    argv = build_stage.build_command_of(PLANNED, ctx, lines.append)
    assert prepared == [FACTORY_BUILDER]  # made on first use, before the build
    assert argv[:5] == ["/usr/bin/docker", "buildx", "build", "--builder", FACTORY_BUILDER]
    assert lines == [f"build cache: {refs(argv)[0]} (builder {FACTORY_BUILDER}, the factory's "
                     "docker-container builder; pr staging)"]


def test_settings_of_the_cache_and_builder(tmp_path):
    default = settings(tmp_path)
    assert (default.build_cache, default.buildx_builder, default.buildkit_image) == (
        "registry", None, None)
    with pytest.raises(InputError):
        settings(tmp_path, PIPELINE_BUILD_CACHE="s3")


def test_buildx_keeps_the_users_builders_whatever_config_holds_the_login():
    assert buildx_config_dir({"BUILDX_CONFIG": "/b"}) == "/b"
    assert buildx_config_dir({"DOCKER_CONFIG": "/d"}) == "/d/buildx"
    logged_in = replace(CLIENT, config="/run/docker-1")
    assert logged_in.env() == {"DOCKER_BUILDKIT": "1", "DOCKER_CONFIG": "/run/docker-1",
                               "BUILDX_CONFIG": "/home/u/.docker/buildx"}


def test_buildkitd_config_marks_loopback_registries_plain_http():
    text = buildx.buildkitd_config(["127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:5000",
                                    "registry.example.org"])
    assert text.count('[registry."127.0.0.1:5000"]') == 1
    assert '[registry."127.0.0.1:5001"]\n  http = true\n  insecure = true' in text
    assert "registry.example.org" not in text  # https, as the factory's own client uses it
    assert "gckeepstorage" in text
