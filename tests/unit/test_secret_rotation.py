"""Secrets and the configuration mounted as Kubernetes volumes are re-read through their symlinks.

A Secret or ConfigMap volume holds ``name -> ..data/name`` and ``..data ->
..<timestamp>``; an update writes a new timestamped directory, swaps
``..data`` to it in one rename and deletes the old one. A reload must then
read the new values, so no path may have been resolved to the old directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from edge import create_app
from edge.config import load_settings
from edge.gateway_token import load_gateway_token
from edge.pairing.tokens import generate_secret


class Volume:
    """A directory laid out and updated the way the kubelet does it for a Secret."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(mode=0o700)
        self.version = 0

    def publish(self, files: dict[str, str]) -> None:
        self.version += 1
        fresh = self.root / f"..2026_12_04_{self.version:02d}"
        fresh.mkdir(mode=0o700)
        for name, text in files.items():
            (fresh / name).write_text(text, encoding="utf-8")
            (fresh / name).chmod(0o600)
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        swap = self.root / "..data_tmp"
        swap.symlink_to(fresh.name)
        os.replace(swap, self.root / "..data")  # the one atomic step
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        if old is not None:
            for entry in old.iterdir():
                entry.unlink()
            old.rmdir()


def test_a_swapped_secret_and_config_map_are_read_anew(tmp_path: Path) -> None:
    secrets = Volume(tmp_path / "secrets")
    config_map = Volume(tmp_path / "config")
    (tmp_path / "data").mkdir(mode=0o700)
    first, second = generate_secret(), generate_secret()
    metrics_first, metrics_second = "m" * 24, "n" * 24
    secrets.publish({"gateway-token": first + "\n", "metrics-token": metrics_first})
    config = {
        "data_dir": str(tmp_path / "data"),
        "auth": {"token_file": "../secrets/gateway-token"},  # relative to the mounted file
        "metrics": {"bearer_token_file": str(secrets.root / "metrics-token")},
        "proxy": {"trusted_proxies": ["10.0.0.1"]},
    }
    config_map.publish({"edge.yaml": yaml.safe_dump(config)})
    path = config_map.root / "edge.yaml"

    settings = load_settings(path)
    assert load_gateway_token(settings, create=False).value == first
    assert settings.metrics.bearer_token == metrics_first
    app = create_app(settings)
    gateway = app.state.gateway

    secrets.publish({"gateway-token": second + "\n", "metrics-token": metrics_second})
    config_map.publish(
        {"edge.yaml": yaml.safe_dump({**config, "proxy": {"trusted_proxies": ["10.0.0.2"]}})}
    )
    changed = gateway.reload()
    assert {"gateway token", "proxy", "metrics"} <= set(changed)
    assert gateway.service.check_gateway_token(second)
    assert not gateway.service.check_gateway_token(first)
    assert gateway.live.config.settings.metrics.bearer_token == metrics_second
    assert gateway.live.config.settings.proxy.trusted_proxies == ["10.0.0.2"]


def test_a_token_file_from_the_environment_follows_the_swap(tmp_path: Path) -> None:
    secrets = Volume(tmp_path / "secrets")
    first, second = generate_secret(), generate_secret()
    secrets.publish({"token": first})
    env = {"EDGE_GATEWAY_TOKEN_FILE": str(secrets.root / "token")}
    settings = load_settings({"data_dir": str(tmp_path / "data")}, environ=env)
    assert settings.auth.token_file == secrets.root / "token"
    assert load_gateway_token(settings, create=False).value == first
    secrets.publish({"token": second})
    assert load_gateway_token(settings, create=False).value == second
