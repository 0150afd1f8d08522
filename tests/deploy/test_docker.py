"""deploy/docker/Dockerfile: an exact base image, and OCI labels that agree with pyproject.toml.

A moving tag (``python:3.11-slim``) rebuilds onto whatever interpreter and
Debian point release it names that day; an exact one rebuilds onto the one
the suite was run with. The labels are what ``docker inspect`` and registries
show, so they must say what the package says.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "base" / "deployment.yaml"
# python:<major.minor.patch>-slim-<Debian codename>: nothing about it moves.
EXACT_PYTHON = re.compile(r"^python:(?P<version>\d+\.\d+\.\d+)-slim-(?P<debian>[a-z]+)$")
REQUIRED_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.base.name",
)


def instructions(text: str) -> list[tuple[str, str]]:
    """(instruction, arguments) for each line of a Dockerfile, continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def labels(arguments: str) -> dict[str, str]:
    return {key: value for key, value in re.findall(r'([a-z0-9.]+)="([^"]*)"', arguments)}


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = data["project"]
    assert isinstance(project, dict)
    return project


def base_image(dockerfile: list[tuple[str, str]]) -> str:
    """The default of the ``PYTHON_IMAGE`` argument every stage starts from."""
    (default,) = [args for word, args in dockerfile if word == "ARG" and "=" in args]
    name, _, value = default.partition("=")
    assert name == "PYTHON_IMAGE"
    return value


def test_every_stage_starts_from_one_exact_python_release(
    dockerfile: list[tuple[str, str]], project: dict[str, object]
) -> None:
    stages = [args.split()[0] for word, args in dockerfile if word == "FROM"]
    assert len(stages) == 2
    assert set(stages) == {"${PYTHON_IMAGE}"}
    match = EXACT_PYTHON.match(base_image(dockerfile))
    assert match is not None, base_image(dockerfile)
    assert match.group("version") in SpecifierSet(str(project["requires-python"]))
    assert match.group("debian") == "bookworm"


def test_the_image_is_labelled_as_the_package_is(
    dockerfile: list[tuple[str, str]], project: dict[str, object]
) -> None:
    found: dict[str, str] = {}
    for word, args in dockerfile:
        if word == "LABEL":
            found |= labels(args)
    assert set(REQUIRED_LABELS) <= set(found)
    assert found["org.opencontainers.image.title"] == project["name"]
    assert found["org.opencontainers.image.description"] == project["description"]
    assert found["org.opencontainers.image.version"] == project["version"]
    license_field = project["license"]
    assert isinstance(license_field, dict)
    assert found["org.opencontainers.image.licenses"] == license_field["text"]
    assert found["org.opencontainers.image.base.name"] == "docker.io/library/${PYTHON_IMAGE}"


def test_the_license_file_is_the_declared_license_and_ships_in_the_image(
    dockerfile: list[tuple[str, str]], project: dict[str, object]
) -> None:
    license_field = project["license"]
    assert isinstance(license_field, dict)
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.splitlines()[0] == f"{license_field['text']} License"
    assert "Permission is hereby granted, free of charge" in text
    copied = [args for word, args in dockerfile if word == "COPY" and "LICENSE" in args.split()]
    assert copied, "the wheel is built without LICENSE"


def test_kubernetes_runs_this_version_of_the_image(project: dict[str, object]) -> None:
    deployment = yaml.safe_load(DEPLOYMENT.read_text(encoding="utf-8"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"edge-gateway:{project['version']}"
