"""deploy/kubernetes: each overlay renders to valid Kubernetes resources that run Edge as shipped.

Every resource is validated against the Kubernetes API schemas (strictly: an
unknown or misspelt field fails) for the oldest and the newest Kubernetes
release ``kubernetes-validate`` knows. The rest holds the manifests to Edge
itself: the ConfigMap's ``edge.yaml`` loads with Edge's own loader and the
Secret files the Deployment names, the probes are Edge's public health
routes, the Ingress asks Edge's nginx forward-auth endpoint and copies exactly
its identity headers, and every pod runs unprivileged on a read-only root.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from edge.config import SERVED_TREES, Settings, load_settings
from edge.gateway.forward_auth import IDENTITY_HEADERS, NGINX_PATH
from edge.gateway.guard import PUBLIC_EXACT
from tests.deploy.kustomize import Resource, render

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("single", "replicas")
# The oldest release these manifests promise to work on, and the newest there is a schema for.
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
SECRET_KEYS = {
    "single": {"gateway_token", "metrics_token"},
    "replicas": {"gateway_token", "metrics_token", "redis_password"},
}
SECRET_VALUES = {
    "gateway_token": "k8s-gateway-token-0123456789abcdefghij",
    "metrics_token": "k8s-metrics-token-0123456789",
    "redis_password": "k8s-redis-password",
}
# Volumes a pod may use: nothing from the node.
POD_VOLUME_KINDS = {"configMap", "secret", "emptyDir", "persistentVolumeClaim"}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Resource]]:
    return request.param, render(KUBERNETES / request.param)


def one(resources: list[Resource], kind: str, name: str) -> Resource:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def edge_container(resources: list[Resource]) -> dict[str, Any]:
    pod = one(resources, "Deployment", "edge")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "edge")


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def port_named(container: dict[str, Any], name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def mount_of(container: dict[str, Any], path: Path) -> dict[str, Any]:
    """The volume mount that ``path`` lies in (the longest mount path above it)."""
    mounts = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert mounts, f"{path} is on no volume of container {container['name']}"
    return max(mounts, key=lambda m: len(m["mountPath"]))


def load_edge_settings(resources: list[Resource], secrets: Path) -> Settings:
    """The ConfigMap's edge.yaml loaded as ``edge serve`` loads it in the pod.

    The file is the ConfigMap's key mounted where ``EDGE_CONFIG`` points, read
    through ``EDGE_CONFIG`` as the server reads it, with the Deployment's other
    variables as they are but the Secret's mount path pointing at ``secrets``
    (a directory holding a value for each key).
    """
    container = edge_container(resources)
    pod = one(resources, "Deployment", "edge")["spec"]["template"]["spec"]
    config_path = Path(env_of(container)["EDGE_CONFIG"])
    mount = mount_of(container, config_path)
    assert Path(mount["mountPath"]) == config_path.parent
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = one(resources, "ConfigMap", volume["configMap"]["name"])
    copy = secrets.parent / "config" / config_path.name
    copy.parent.mkdir()
    copy.write_text(config_map["data"][config_path.name], encoding="utf-8")
    secret_mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "secrets")
    environ = {
        name: value.replace(secret_mount, str(secrets)) for name, value in env_of(container).items()
    }
    environ["EDGE_CONFIG"] = str(copy)
    return load_settings(environ=environ)


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    for key, value in SECRET_VALUES.items():
        (directory / key).write_text(value + "\n", encoding="utf-8")
    return directory


# -- rendering and schemas -----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_renderer_builds_what_kubectl_kustomize_builds(
    overlay: tuple[str, list[Resource]],
) -> None:
    name, resources = overlay
    built = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / name)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout

    def keyed(items: list[Resource]) -> dict[tuple[str, str, str], Resource]:
        return {
            (r["kind"], r["metadata"].get("namespace", ""), r["metadata"]["name"]): r for r in items
        }

    assert keyed(resources) == keyed([d for d in yaml.safe_load_all(built) if d])


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_is_valid_for_kubernetes(
    overlay: tuple[str, list[Resource]], version: str
) -> None:
    _, resources = overlay
    problems = []
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(
                f"{resource['kind']}/{resource['metadata']['name']} {where}: {exc.message}"
            )
    assert problems == []


def test_everything_but_the_namespace_is_in_it(overlay: tuple[str, list[Resource]]) -> None:
    _, resources = overlay
    namespace = one(resources, "Namespace", "edge")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {r["metadata"].get("namespace") for r in resources if r["kind"] != "Namespace"} == {
        "edge"
    }


# -- security ------------------------------------------------------------------------------------


def test_every_pod_runs_unprivileged_on_a_read_only_root(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    deployments = [r for r in resources if r["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] > 0 and context["runAsGroup"] > 0
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        # A recursive ownership pass on every start would make data_dir group-writable.
        assert context["fsGroupChangePolicy"] == "OnRootMismatch"
        assert pod["automountServiceAccountToken"] is False
        assert "hostNetwork" not in pod and "hostPID" not in pod
        for volume in pod["volumes"]:
            assert set(volume) - {"name"} <= POD_VOLUME_KINDS, volume
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert "privileged" not in security
            assert container["resources"]["limits"]["memory"]
            # Writable: exactly the volumes that are not read-only, and /tmp among them.
            writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
            assert "/tmp" in writable


def test_secrets_come_from_the_secret_as_files_edge_reads(
    overlay: tuple[str, list[Resource]],
) -> None:
    name, resources = overlay
    container = edge_container(resources)
    pod = one(resources, "Deployment", "edge")["spec"]["template"]["spec"]
    secret_volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    assert secret_volume["secret"]["secretName"] == "edge-secrets"
    # Not writable by the group fsGroup gives it: Edge's token-file check refuses that.
    assert secret_volume["secret"]["defaultMode"] & 0o022 == 0
    mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")
    assert mount["readOnly"] is True
    files = {
        Path(value).name
        for variable, value in env_of(container).items()
        if variable.endswith("_FILE")
    }
    assert files == SECRET_KEYS[name]
    assert all(
        Path(value).parent == Path(mount["mountPath"])
        for variable, value in env_of(container).items()
        if variable.endswith("_FILE")
    )
    # No secret in a variable's value, in the ConfigMap or in any other resource.
    rendered = yaml.safe_dump_all(resources)
    assert not any(value in rendered for value in SECRET_VALUES.values())
    assert all(r["kind"] != "Secret" for r in resources)


# -- Edge's own configuration --------------------------------------------------------------------


def test_the_configmap_is_a_configuration_edge_accepts(
    overlay: tuple[str, list[Resource]], secrets: Path
) -> None:
    name, resources = overlay
    settings = load_edge_settings(resources, secrets)
    container = edge_container(resources)
    pod = one(resources, "Deployment", "edge")["spec"]["template"]["spec"]
    assert settings.auth.token_file == secrets / "gateway_token"
    assert settings.metrics.bearer_token == SECRET_VALUES["metrics_token"]
    assert not settings.server.binds_loopback
    assert settings.server.port == port_named(container, "http")
    assert settings.metrics.port == port_named(container, "metrics")
    assert settings.server.graceful_timeout < pod["terminationGracePeriodSeconds"]
    assert settings.proxy.trusted_proxies
    # data_dir is a directory Edge creates (0700) inside a writable volume, never the
    # volume's root, which fsGroup leaves group-writable.
    data = mount_of(container, settings.data_dir)
    assert not data.get("readOnly")
    assert settings.data_dir != Path(data["mountPath"])
    config_mount = mount_of(container, Path(env_of(container)["EDGE_CONFIG"]))
    assert config_mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == data["name"])
    replicas = one(resources, "Deployment", "edge")["spec"]["replicas"]
    if name == "single":
        assert settings.store.url is None  # SQLite in data_dir, on the volume claim
        claim = volume["persistentVolumeClaim"]["claimName"]
        assert one(resources, "PersistentVolumeClaim", claim)
        assert replicas == 1
        assert one(resources, "Deployment", "edge")["spec"]["strategy"] == {"type": "Recreate"}
    else:
        assert replicas > 1
        url = urlsplit(settings.store.url or "")
        assert url.scheme == "redis"
        assert url.password == SECRET_VALUES["redis_password"]
        service = one(resources, "Service", url.hostname or "")
        assert url.port in {p["port"] for p in service["spec"]["ports"]}
        assert "emptyDir" in volume


def test_the_probes_are_edges_public_health_routes(overlay: tuple[str, list[Resource]]) -> None:
    _, resources = overlay
    container = edge_container(resources)
    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    # The kubelet has no device token: a probe must be a route the guard lets through.
    assert all(probe["path"] in PUBLIC_EXACT for probe in probes.values())
    # Readiness follows the store (a replica that lost Redis leaves the Service);
    # liveness does not (it must not be restarted for it).
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    assert {probe["port"] for probe in probes.values()} == {"http"}


def test_the_redis_is_configured_as_edge_asks() -> None:
    resources = render(KUBERNETES / "replicas")
    pod = one(resources, "Deployment", "edge-redis")["spec"]["template"]["spec"]
    args = " ".join(pod["containers"][0]["args"])
    for setting in ("--appendonly yes", "--maxmemory-policy noeviction", "--requirepass"):
        assert setting in args
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert one(resources, "PersistentVolumeClaim", data["persistentVolumeClaim"]["claimName"])
    policy = one(resources, "NetworkPolicy", "edge-redis")
    assert policy["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "edge"}}}
    ]


# -- Service, Ingress, NetworkPolicy -------------------------------------------------------------


def test_the_service_and_network_policy_name_the_containers_ports(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    container = edge_container(resources)
    names = {p["name"] for p in container["ports"]}
    service = one(resources, "Service", "edge")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == names
    pod_labels = one(resources, "Deployment", "edge")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    policy = one(resources, "NetworkPolicy", "edge")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    allowed = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert allowed == names


def test_the_ingress_asks_edges_forward_auth(
    overlay: tuple[str, list[Resource]], secrets: Path
) -> None:
    _, resources = overlay
    edge_ingress = one(resources, "Ingress", "edge")
    (host,) = {rule["host"] for rule in edge_ingress["spec"]["rules"]}
    service = one(resources, "Service", "edge")
    http_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert edge_ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
        "name": "edge",
        "port": {"name": "http"},
    }

    app = one(resources, "Ingress", "edge-app")
    notes = app["metadata"]["annotations"]
    auth = urlsplit(notes["nginx.ingress.kubernetes.io/auth-url"])
    namespace = service["metadata"]["namespace"]
    assert auth.hostname == f"edge.{namespace}.svc.cluster.local"
    assert auth.port == http_port
    assert auth.path == NGINX_PATH
    # Refused browsers pair on Edge's own host, the only one its session cookie is sent to.
    assert urlsplit(notes["nginx.ingress.kubernetes.io/auth-signin"]).hostname == host
    assert {rule["host"] for rule in app["spec"]["rules"]} == {host}
    copied = notes["nginx.ingress.kubernetes.io/auth-response-headers"].split(",")
    assert sorted(h.strip().lower() for h in copied) == sorted(IDENTITY_HEADERS)
    # The sub-request is told the origin the browser is on, for Edge's same-origin check.
    config_namespace, _, config_name = notes[
        "nginx.ingress.kubernetes.io/auth-proxy-set-headers"
    ].partition("/")
    assert config_namespace == namespace
    headers = one(resources, "ConfigMap", config_name)["data"]
    assert headers == {"X-Forwarded-Host": host, "X-Forwarded-Proto": "https"}
    # The protected app's paths are none of Edge's own.
    for rule in app["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert not any(path["path"].rstrip("/") == tree for tree in SERVED_TREES)
    # The ingress controller's pods are where Edge believes proxy headers from.
    settings = load_edge_settings(resources, secrets)
    policy = one(resources, "NetworkPolicy", "edge")
    sources = [
        rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["spec"]["ingress"]
        if {"port": "http"} in rule["ports"]
    ]
    assert sources == ["ingress-nginx"]
    assert settings.proxy.client_ip_headers == ["x-forwarded-for"]
