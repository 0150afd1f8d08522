"""A renderer for the part of kustomize that ``deploy/kubernetes`` uses, so tests need no binary.

Supported, and nothing else (anything more in a kustomization is an error, so
a manifest cannot quietly use what this renderer would get wrong):
``resources`` (files and directories with a kustomization of their own),
``namespace``, ``configMapGenerator`` with ``files`` (the name gets
kustomize's content hash, and the pod templates' references follow it), and
``patches`` given as strategic-merge files.
Strategic merge follows Kubernetes: maps merge key by key, a ``null`` removes
the key, and the lists Kubernetes merges by a key (containers and volumes by
name, mounts by path) merge item by item, the patch's items first as kustomize
writes them; every other list is replaced.
``test_kubernetes`` compares the result with ``kubectl kustomize`` where that
is installed.
"""

from __future__ import annotations

import hashlib
import json
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
    renamed = {}
    for generator in kustomization.get("configMapGenerator", []):
        config_map = _config_map(directory, generator)
        renamed[generator["name"]] = config_map["metadata"]["name"]
        resources.append(config_map)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only file patches are supported, not {patch}")
        _apply(resources, yaml.safe_load((directory / patch["path"]).read_text("utf-8")))
    for resource in resources:
        _rename_config_maps(resource, renamed)
    namespace = kustomization.get("namespace")
    if namespace:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = namespace
    return resources


def _config_map(directory: Path, generator: dict[str, Any]) -> Resource:
    if set(generator) != {"name", "files"}:
        raise KustomizeError(f"{directory}: only ConfigMaps of files are supported")
    data = {}
    for entry in generator["files"]:
        key, _, source = entry.rpartition("=") if "=" in entry else ("", "", entry)
        data[key or Path(source).name] = (directory / source).read_text("utf-8")
    name = f"{generator['name']}-{_content_hash(data)}"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _content_hash(data: dict[str, str]) -> str:
    """kustomize's name suffix: ten letters of the SHA-256 of the ConfigMap as Go encodes it.

    kustomize (v5, as in kubectl) encodes kind, data and an empty name: the
    suffix follows the content alone.
    """
    encoded = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": ""},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # Go's encoder escapes these for HTML; they occur only inside strings.
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        encoded = encoded.replace(char, escaped)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _rename_config_maps(resource: Resource, renamed: dict[str, str]) -> None:
    """Point a pod template's ConfigMap volumes and variables at the generated names."""
    pod = resource.get("spec", {}).get("template", {}).get("spec")
    if not renamed or pod is None:
        return
    references = [volume.get("configMap", {}) for volume in pod.get("volumes", [])]
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        references += [source.get("configMapRef", {}) for source in container.get("envFrom", [])]
        references += [
            item.get("valueFrom", {}).get("configMapKeyRef", {})
            for item in container.get("env", [])
        ]
    for reference in references:
        if reference.get("name") in renamed:
            reference["name"] = renamed[reference["name"]]


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
