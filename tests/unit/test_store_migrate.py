"""``edge store migrate`` and ``edge store info`` in process, on SQLite and a real Redis.

The stores are filled through ``PairingService`` as a gateway would fill them:
devices approved, revoked and paired by invite, pending and settled requests,
invites, a lockout. A migration must copy all of it, and a device token issued
on the source must still work on the destination.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.cli import main
from edge.cli.store import redis_warnings
from edge.config import load_settings
from edge.gateway.protocol import connect_attempt
from edge.pairing.models import Device as StoredDevice
from edge.pairing.models import Role
from edge.pairing.service import Admitted, Denied, PairingPolicy, PairingService, RateLimitPolicy
from edge.pairing.store import RedisInfo, SnapshotStore, Store, StoreSnapshot, open_store
from tests.conftest import GATEWAY_TOKEN, Device
from tests.redis_server import free_port, shared_redis_server, stop_shared_redis_server  # noqa: F401

POLICY = PairingPolicy(rate_limit=RateLimitPolicy(failures=3, window=60, lockout=300))


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    return path


@pytest.fixture
def redis_url() -> Iterator[str]:
    server = shared_redis_server()
    prefix = f"m{uuid.uuid4().hex[:16]}"
    yield server.url(prefix)
    server.drop_prefix(prefix)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def opened(url: str, tmp_path: Path) -> Store:
    return open_store(url, tmp_path / "data")


def snapshot(store: Store) -> StoreSnapshot:
    assert isinstance(store, SnapshotStore)
    return store.export_snapshot()


def ask(service: PairingService, device: Device, ip: str = "198.51.100.7", **auth: str) -> Any:
    return service.connect(
        attempt=connect_attempt(device.connect_frame("nonce-1", auth or {"token": GATEWAY_TOKEN})),
        nonce="nonce-1",
        client_ip=ip,
        local=False,
        user_agent="pytest",
    )


def fill(store: Store) -> dict[str, Any]:
    """A store with one of everything; returns what the checks need."""
    service = PairingService(store, GATEWAY_TOKEN, POLICY)
    laptop, phone, kiosk, waiting, rejected = (
        Device(n) for n in ("laptop", "phone", "kiosk", "waiting", "rejected")
    )
    for device, role in ((laptop, Role.ADMIN), (phone, None)):
        service.approve(ask(service, device).request.id, role=role, actor="cli")
        admitted = ask(service, device)
        assert isinstance(admitted, Admitted)
        device.token = admitted.device_token
    service.revoke(phone.id, actor="cli")
    _, code = service.create_invite(role=Role.USER, name="kiosk", ttl=3600, actor="cli")
    service.create_invite(role=Role.ADMIN, name=None, ttl=3600, actor="cli")
    assert isinstance(ask(service, kiosk, invite=code), Admitted)
    pending = ask(service, waiting, ip="203.0.113.9").request
    service.reject(ask(service, rejected, ip="203.0.113.10").request.id, actor="ops")
    for _ in range(3):
        assert isinstance(ask(service, Device("guesser"), ip="192.0.2.66", token="wrong"), Denied)
    return {"laptop": laptop, "pending": pending, "service": service}


def test_round_trip_sqlite_redis_sqlite_keeps_everything(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path, redis_url: str
) -> None:
    first = f"sqlite:///{tmp_path / 'first.sqlite3'}"
    source = opened(first, tmp_path)
    fill(source)
    original = snapshot(source)
    source.close()
    assert len(original.devices) == 3 and len(original.requests) == 4
    assert len(original.invites) == 2 and len(original.failures) == 1
    code, out, err = run(
        capsys, "store", "migrate", "--config", str(config_file), "--from", first, "--to", redis_url
    )
    assert code == 0, err
    assert "copied 3 devices (2 paired), 4 pairing requests (1 pending), 2 invites" in out
    assert "next: set store.url to " + redis_url in out
    on_redis = opened(redis_url, tmp_path)
    assert snapshot(on_redis) == original
    on_redis.close()
    second = f"sqlite:///{tmp_path / 'second.sqlite3'}"
    code, _, err = run(
        capsys,
        "store",
        "migrate",
        "--config",
        str(config_file),
        "--from",
        redis_url,
        "--to",
        second,
    )
    assert code == 0, err
    back = opened(second, tmp_path)
    assert snapshot(back) == original
    back.close()


def test_migrated_store_goes_on_where_the_source_stopped(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path, redis_url: str
) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.sqlite3'}"
    source = open_store(source_url, tmp_path)
    filled = fill(source)
    seq = source.latest_seq()
    source.close()
    assert (
        run(
            capsys,
            "store",
            "migrate",
            "-c",
            str(config_file),
            "--from",
            source_url,
            "--to",
            redis_url,
        )[0]
        == 0
    )
    target = open_store(redis_url, tmp_path)
    service = PairingService(target, GATEWAY_TOKEN, POLICY)
    laptop = filled["laptop"]
    device = service.authenticate_token(laptop.token)
    assert isinstance(device, StoredDevice) and device.id == laptop.id
    assert service.lockout_remaining("192.0.2.66") > 0  # the lockout came along
    assert [r.id for r in service.list_requests()] == [filled["pending"].id]
    approved = service.approve(filled["pending"].id, actor="cli")
    assert approved.role is Role.USER
    events = target.events_after(seq)
    assert [e.seq for e in events] == [seq + 1] and events[0].type == "pairing.resolved"
    target.close()


def test_default_source_is_the_configured_store(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path, redis_url: str
) -> None:
    settings = load_settings(config_file, environ={})
    configured = open_store(None, settings.data_dir)
    fill(configured)
    expected = snapshot(configured)
    configured.close()
    code, out, _ = run(capsys, "store", "migrate", "-c", str(config_file), "--to", redis_url)
    assert code == 0 and "edge.sqlite3" in out
    target = opened(redis_url, tmp_path)
    assert snapshot(target) == expected
    target.close()


def test_non_empty_destination_is_refused_unless_forced(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path, redis_url: str
) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.sqlite3'}"
    source = opened(source_url, tmp_path)
    fill(source)
    expected = snapshot(source)
    source.close()
    busy = open_store(redis_url, tmp_path)
    busy_service = PairingService(busy, GATEWAY_TOKEN, POLICY)
    stranger = Device("stranger")
    busy_service.approve(ask(busy_service, stranger).request.id, actor="cli")
    busy_seq = busy.latest_seq()
    code, _, err = run(
        capsys, "store", "migrate", "-c", str(config_file), "--from", source_url, "--to", redis_url
    )
    assert code == 1
    assert "is not empty (1 devices (1 paired)" in err and "add --force" in err
    assert busy.get_device(stranger.id) is not None  # untouched
    code, _, err = run(
        capsys,
        "store",
        "migrate",
        "-c",
        str(config_file),
        "--from",
        source_url,
        "--to",
        redis_url,
        "--force",
    )
    assert code == 0, err
    assert busy.get_device(stranger.id) is None
    replaced_store = opened(redis_url, tmp_path)
    replaced = snapshot(replaced_store)
    replaced_store.close()
    assert replaced.devices == expected.devices and replaced.requests == expected.requests
    assert replaced.event_seq == max(busy_seq, expected.event_seq)
    busy.close()


def test_missing_source_file_is_refused_and_not_created(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path, redis_url: str
) -> None:
    missing = tmp_path / "nowhere.sqlite3"
    code, _, err = run(
        capsys,
        "store",
        "migrate",
        "-c",
        str(config_file),
        "--from",
        f"sqlite:///{missing}",
        "--to",
        redis_url,
    )
    assert code == 1 and f"there is no SQLite store at {missing}" in err
    assert not missing.exists()


def test_same_store_on_both_sides_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'one.sqlite3'}"
    open_store(url, tmp_path).close()
    code, _, err = run(
        capsys, "store", "migrate", "-c", str(config_file), "--from", url, "--to", url
    )
    assert code == 2 and "--from and --to are the same store" in err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("redis://:hunter2@127.0.0.1:6379/0?colour=blue", "unknown option 'colour'"),
        ("redis://:hunter2@127.0.0.1:6379/zero", "database 'zero' must be a number"),
        ("redis://:hunter2@127.0.0.1:6379/0?ssl_ca_certs=/etc/ca.pem", "needs TLS; use rediss://"),
        ("postgres://edge:hunter2@db/edge", "not a supported store"),
    ],
)
def test_bad_destination_url_is_a_config_error_without_the_password(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path, target: str, message: str
) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.sqlite3'}"
    open_store(source_url, tmp_path).close()
    code, out, err = run(
        capsys, "store", "migrate", "-c", str(config_file), "--from", source_url, "--to", target
    )
    assert code == 2 and message in err
    assert "hunter2" not in out + err


def test_unreachable_redis_names_it_without_the_password(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    closed_port = free_port()  # nothing listens there
    code, _, err = run(
        capsys,
        "store",
        "info",
        "-c",
        str(config_file),
        "--url",
        f"redis://:hunter2@127.0.0.1:{closed_port}/0",
    )
    assert code == 2
    assert (
        f"Redis store redis://127.0.0.1:{closed_port}/0: cannot connect; Redis is unreachable"
        in err
    )
    assert "hunter2" not in err


def test_info_on_sqlite_counts_what_the_store_holds(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    settings = load_settings(config_file, environ={})
    store = open_store(None, settings.data_dir)
    fill(store)
    store.close()
    code, out, _ = run(capsys, "store", "info", "-c", str(config_file))
    assert code == 0
    assert "backend:          sqlite (schema 3)" in out
    assert "devices:          2 paired (1 admin, 1 user), 1 revoked" in out
    assert "pending requests: 1" in out and "invites:          1 usable, 1 used or expired" in out
    code, out, _ = run(capsys, "store", "info", "-c", str(config_file), "--json")
    facts = json.loads(out)
    assert facts["backend"] == "sqlite" and facts["devices"]["byRole"] == {"admin": 1, "user": 1}
    assert facts["eventSeq"] > 0 and facts["warnings"] == []


def test_info_before_the_first_start_says_there_is_no_store(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "store", "info", "-c", str(config_file))
    assert code == 1 and "there is no SQLite store" in err
    assert not (tmp_path / "data" / "edge.sqlite3").exists()


def test_info_on_redis_shows_its_durability_settings(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path, redis_url: str
) -> None:
    store = open_store(redis_url, tmp_path)
    fill(store)
    store.close()
    code, out, err = run(
        capsys, "store", "info", "-c", str(config_file), "--url", redis_url, "--json"
    )
    assert code == 0, err
    facts = json.loads(out)
    assert facts["backend"] == "redis" and facts["schema"] == 1
    assert facts["devices"] == {"paired": 2, "revoked": 1, "byRole": {"admin": 1, "user": 1}}
    assert facts["redis"]["appendonly"] is True and facts["redis"]["appendfsync"] == "everysec"
    assert facts["redis"]["eventLogLength"] == facts["eventSeq"]
    assert facts["warnings"] == []


@pytest.mark.parametrize(
    ("changes", "warning"),
    [
        ({"appendonly": False}, "appendonly is off"),
        ({"appendfsync": "no"}, "appendfsync is no"),
        ({"maxmemory_policy": "allkeys-lru"}, "maxmemory-policy is allkeys-lru"),
        ({"role": "slave"}, "this Redis is a slave: point store.url at the primary"),
    ],
)
def test_risky_redis_settings_are_warned_about(changes: dict[str, Any], warning: str) -> None:
    safe = RedisInfo("7.0.0", True, "everysec", "noeviction", "master", 0)
    assert redis_warnings(safe) == []
    risky = dataclasses.replace(safe, **changes)
    (found,) = redis_warnings(risky)
    assert warning in found
