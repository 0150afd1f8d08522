"""Edge's pod for real: ``edge serve`` as the pod's user, on the volumes the kubelet makes.

No cluster runs here, so the kubelet's part is played by this test, from the
rendered manifests: each volume the Edge container mounts is laid out as the
kubelet lays it out under the pod's ``fsGroup`` (an emptyDir or claim whose
root is group-writable with the setgid bit; ConfigMap and Secret volumes as a
timestamped directory behind ``..data`` symlinks, on a sticky tmpfs root,
files root-owned in the pod's group with the volume's mode), under a scratch
root that stands for ``/``. Then the container's command runs with its
variables, as its ``runAsUser``/``runAsGroup`` with ``fsGroup`` as a
supplementary group. It must pass Edge's own start-up checks (data_dir and
token file trusted only when nobody else can write them), become ready on the
readiness probe's path, serve metrics to the Secret's token only, and write
nowhere but its writable volumes.

The only changes to the pod are forced by running on a shared machine: the
addresses Edge binds are loopback with free ports, the replicas' Redis is a
``redis-server`` on loopback (with the Secret's password), and the interpreter
is the system's (the test's own lives in a directory the pod's user cannot
enter).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from edge.config import parse_yaml
from tests.deploy.kustomize import Resource, render
from tests.deploy.test_kubernetes import KUBERNETES, SECRET_VALUES, edge_container, env_of, one
from tests.integration.conftest import free_port, stop_process, wait_for_port
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
TIMESTAMP_DIR = "..2026_01_01_00_00_00.000000001"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or os.geteuid() != 0,
        reason="needs Linux and root (to lay out root-owned volumes and run as the pod's user)",
    ),
]


def system_python_matches() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return version == str(sys.version_info[:2])


class Pod:
    """The rendered pod spec of one overlay, and where its volumes are laid out."""

    def __init__(self, resources: list[Resource], root: Path) -> None:
        self.resources = resources
        self.root = root
        self.spec = one(resources, "Deployment", "edge")["spec"]["template"]["spec"]
        self.container = edge_container(resources)
        context = self.spec["securityContext"]
        self.uid, self.gid, self.fs_group = (
            context["runAsUser"],
            context["runAsGroup"],
            context["fsGroup"],
        )

    def path(self, in_pod: str | Path) -> Path:
        return self.root / Path(in_pod).relative_to("/")

    def volume(self, name: str) -> dict[str, Any]:
        return next(v for v in self.spec["volumes"] if v["name"] == name)

    def lay_out(self, edge_yaml: str) -> None:
        """Every mounted volume as the kubelet leaves it for a container of this pod."""
        for mount in self.container["volumeMounts"]:
            volume = self.volume(mount["name"])
            target = self.path(mount["mountPath"])
            target.mkdir(parents=True)
            if "configMap" in volume:
                config_map = one(self.resources, "ConfigMap", volume["configMap"]["name"])
                files = {**config_map["data"], "edge.yaml": edge_yaml}
                self._atomic(target, files, volume["configMap"].get("defaultMode", 0o644))
            elif "secret" in volume:
                self._atomic(target, SECRET_VALUES, volume["secret"]["defaultMode"])
            else:  # emptyDir or a claim: writable by the pod's group, setgid
                self._own(target, 0o2777 if "emptyDir" in volume else 0o2775)

    def _own(self, path: Path, mode: int) -> None:
        os.chown(path, 0, self.fs_group, follow_symlinks=False)
        path.chmod(mode)

    def _atomic(self, target: Path, files: dict[str, str], mode: int) -> None:
        """The kubelet's atomic writer: files in a timestamped directory behind ``..data``."""
        self._own(target, 0o3777)  # a tmpfs root, sticky, in the pod's group
        stamped = target / TIMESTAMP_DIR
        stamped.mkdir()
        self._own(stamped, 0o2755)
        for name, text in files.items():
            (stamped / name).write_text(text, encoding="utf-8")
            self._own(stamped / name, mode)
        (target / "..data").symlink_to(TIMESTAMP_DIR)
        for name in files:
            (target / name).symlink_to(f"..data/{name}")

    def environment(self) -> dict[str, str]:
        """The container's variables, paths under the scratch root, and what Python needs."""
        env = {
            name: str(self.path(value)) if value.startswith("/") else value
            for name, value in env_of(self.container).items()
        }
        code, libraries = self.image_code()
        return {
            **env,
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.path("/var/lib/edge")),
            "PYTHONPATH": f"{code}{os.pathsep}{libraries}",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def image_code(self) -> tuple[Path, Path]:
        """Edge and its libraries where the image keeps them, readable by the pod's user.

        The checkout and the test's virtualenv may sit in a directory only their
        owner can enter (a fresh clone under ``mktemp -d`` is mode 0700), so they
        are laid out under the scratch root as hard links (copies across
        filesystems), as the image's ``/opt`` would hold them.
        """
        code, libraries = self.path("/opt/edge/app"), self.path("/opt/edge/site-packages")
        if not code.exists():
            ignore = shutil.ignore_patterns("__pycache__")
            link_tree(ROOT / "edge", code / "edge", ignore)
            link_tree(Path(sysconfig.get_paths()["purelib"]), libraries, ignore)
            for directory in (self.path("/opt"), self.path("/opt/edge"), code, libraries):
                directory.chmod(0o755)
        return code, libraries

    def run(self, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
        """``edge args`` as the container's user, in its working directory."""
        return self._python(["-m", "edge.cli", *args], popen)

    def run_python(self, code: str, **popen: Any) -> subprocess.Popen[bytes]:
        return self._python(["-c", code], popen)

    def _python(self, args: list[str], popen: dict[str, Any]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(SYSTEM_PYTHON), "-s", *args],
            env=self.environment(),
            cwd=self.path("/var/lib/edge"),
            user=self.uid,
            group=self.gid,
            extra_groups=[self.fs_group],
            **popen,
        )


def link_tree(source: Path, target: Path, ignore: Any) -> None:
    """``source`` at ``target`` as hard links, or copies where a link cannot be made."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, ignore=ignore, copy_function=link_or_copy, symlinks=True)


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(directory)): (path.lstat().st_mode, path.lstat().st_size)
        for path in sorted(directory.rglob("*"))
    }


@pytest.fixture
def scratch() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="edge-pod-"))
    directory.chmod(0o755)  # "/": the pod's user may enter it
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("overlay", ["single", "replicas"])
def test_the_pod_starts_serves_and_stops_on_the_kubelets_volumes(
    scratch: Path, tmp_path: Path, overlay: str
) -> None:
    if not system_python_matches():
        pytest.skip(f"no {SYSTEM_PYTHON} of Python {sys.version_info[:2]} for the pod's user")
    pod = Pod(render(KUBERNETES / overlay), scratch)
    # The overlay's edge.yaml with loopback ports and its data_dir under the scratch root.
    config_path = Path(env_of(pod.container)["EDGE_CONFIG"])
    config_map = one(pod.resources, "ConfigMap", pod.volume("config")["configMap"]["name"])
    config = dict(parse_yaml(config_map["data"][config_path.name]))
    port, metrics_port = free_port(), free_port()
    config["server"] = {**config["server"], "host": "127.0.0.1", "port": port}
    config["metrics"] = {**config["metrics"], "host": "127.0.0.1", "port": metrics_port}
    data_dir = pod.path(config["data_dir"])
    config["data_dir"] = str(data_dir)
    redis_server = None
    if "store" in config:  # the replicas' Redis; its password comes from the Secret
        redis_server = RedisServer(tmp_path / "redis", password=SECRET_VALUES["redis_password"])
        redis_server.start()
        config["store"] = {"url": f"redis://127.0.0.1:{redis_server.port}/0"}
    pod.lay_out(yaml.safe_dump(config))
    read_only = [
        pod.path(m["mountPath"]) for m in pod.container["volumeMounts"] if m.get("readOnly")
    ]
    before = {path: snapshot(path) for path in read_only}
    # Whether the pod's user can run Edge with the system interpreter at all: the lock,
    # made for the test's own Python, must hold everything this interpreter needs
    # (redis-py wants async-timeout before 3.11.3).
    modules = ["edge.app"] + (["edge.pairing.store.redis"] if redis_server else [])
    probe = pod.run_python(
        f"import {', '.join(modules)}", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, error = probe.communicate(timeout=60)
    if probe.returncode != 0:
        if redis_server is not None:
            redis_server.stop()
        pytest.skip(f"uid {pod.uid} cannot run Edge with {SYSTEM_PYTHON}: {error.decode()[-200:]}")

    log = scratch / "edge.log"
    with log.open("wb") as output:
        server = pod.run(
            *pod.container["command"][1:],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, proc=server, timeout=30)
        readiness = pod.container["readinessProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + 30
        while (
            answer := httpx.get(f"http://127.0.0.1:{port}{readiness}", timeout=5)
        ).status_code != 200:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.1)
        assert answer.json() == {"status": "ready", "store": "ok"}
        liveness = pod.container["livenessProbe"]["httpGet"]["path"]
        assert httpx.get(f"http://127.0.0.1:{port}{liveness}", timeout=5).status_code == 200

        wait_for_port(metrics_port, proc=server)
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        assert httpx.get(metrics, timeout=5).status_code == 401
        scraped = httpx.get(
            metrics,
            headers={"authorization": f"Bearer {SECRET_VALUES['metrics_token']}"},
            timeout=5,
        )
        assert scraped.status_code == 200 and "edge_build_info" in scraped.text

        # What `kubectl exec deploy/edge -- edge token show` prints: the Secret's token.
        shown = pod.run("token", "show", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = shown.communicate(timeout=60)
        assert shown.returncode == 0, err.decode()
        assert out.decode().strip() == SECRET_VALUES["gateway_token"]
    finally:
        started = time.monotonic()
        stop_process(server, signal.SIGTERM, timeout=pod.spec["terminationGracePeriodSeconds"])
        stopped_within = time.monotonic() - started
        if redis_server is not None:
            redis_server.stop()
        print(log.read_text(errors="replace"))  # shown when the test fails
    # A graceful stop within the grace period (uvicorn re-raises the signal once done).
    assert server.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete." in log.read_text(errors="replace")
    assert stopped_within < pod.spec["terminationGracePeriodSeconds"]

    # data_dir: made by Edge, the pod user's alone (the group and the setgid bit come from
    # the volume, the permissions from Edge); the SQLite store in it, unless on Redis.
    info = data_dir.stat()
    assert (info.st_uid, info.st_gid) == (pod.uid, pod.fs_group)
    assert stat.S_IMODE(info.st_mode) == stat.S_ISGID | 0o700
    assert (data_dir / "edge.sqlite3").exists() == (redis_server is None)
    # Nothing was written to a read-only volume (root-owned, but a Secret's root is sticky 1777).
    assert {path: snapshot(path) for path in read_only} == before
