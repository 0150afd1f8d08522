"""A renderer for the part of kustomize that ``deploy/kubernetes`` uses, so tests need no binary.

Supported, and nothing else (anything more in a kustomization is an error, so
a manifest cannot quietly use what this renderer would get wrong):
``resources`` (files and directories with a kustomization of their own),
``namespace``, ``configMapGenerator`` with ``files`` and a fixed name
(``disableNameSuffixHash``), and ``patches`` given as strategic-merge files.
Strategic merge follows Kubernetes: maps merge key by key, a ``null`` removes
the key, and the lists Kubernetes merges by a key (containers and volumes by
name, mounts by path) merge item by item, the patch's items first as kustomize
writes them; every other list is replaced.
``test_kubernetes`` compares the result with ``kubectl kustomize`` where that
is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

KNOWN_KEYS = frozenset(
    {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "patches"}
)
CLUSTER_SCOPED = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
)
# The patch strategy of the lists these manifests patch, as the Kubernetes API declares it.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "topologySpreadConstraints": "topologyKey",
}

Resource = dict[str, Any]


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not implement."""


def render(directory: Path) -> list[Resource]:
    """Every resource the kustomization in ``directory`` builds."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text("utf-8"))
    unknown = set(kustomization) - KNOWN_KEYS
    if unknown:
        raise KustomizeError(f"{directory}: unsupported keys {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources += render(path)
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc]
    for generator in kustomization.get("configMapGenerator", []):
        resources.append(_config_map(directory, generator))
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only file patches are supported, not {patch}")
        _apply(resources, yaml.safe_load((directory / patch["path"]).read_text("utf-8")))
    namespace = kustomization.get("namespace")
    if namespace:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = namespace
    return resources


def _config_map(directory: Path, generator: dict[str, Any]) -> Resource:
    if set(generator) != {"name", "files", "options"} or generator["options"] != {
        "disableNameSuffixHash": True
    }:
        raise KustomizeError(f"{directory}: only named file ConfigMaps are supported")
    data = {}
    for entry in generator["files"]:
        key, _, source = entry.rpartition("=") if "=" in entry else ("", "", entry)
        data[key or Path(source).name] = (directory / source).read_text("utf-8")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": generator["name"]},
        "data": data,
    }


def _apply(resources: list[Resource], patch: Resource) -> None:
    for index, resource in enumerate(resources):
        if (resource["kind"], resource["metadata"]["name"]) == (
            patch["kind"],
            patch["metadata"]["name"],
        ):
            resources[index] = merge(resource, patch)
            return
    raise KustomizeError(f"patch target {patch['kind']}/{patch['metadata']['name']} not found")


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """``patch`` merged into ``base`` as a strategic-merge patch."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge(merged[key], value, key)
            else:
                merged[key] = value
        return merged
    key = MERGE_KEYS.get(field)
    if key is not None and isinstance(base, list) and isinstance(patch, list):
        # As kustomize orders them: the patch's items first, then the rest of the base's.
        by_key = {old.get(key): old for old in base}
        patched = [
            merge(by_key[item.get(key)], item) if item.get(key) in by_key else item
            for item in patch
        ]
        named = {item.get(key) for item in patch}
        return patched + [old for old in base if old.get(key) not in named]
    return patch
