"""deploy/prometheus for real: promtool checks, and a Prometheus server scraping ``edge serve``.

The Prometheus configuration is the shipped ``deploy/prometheus/prometheus.yml``
with only the target, the intervals and the rule path changed, so what is
tested is what operators install.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from edge import __version__, create_app
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, REMOTE, Device, base_config, client_for
from tests.gateway.test_metrics import Exposition
from tests.integration.conftest import EdgeServer, free_port, stop_process, wait_for_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("promtool") is None or shutil.which("prometheus") is None,
        reason="prometheus and promtool are not installed (scripts/install-test-deps)",
    ),
]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = {
    "EdgeDown",
    "EdgeMetricsAbsent",
    "EdgeProxyHeaderAnomalies",
    "EdgeProxyMisconfigured",
    "EdgePeerOwnerUnknown",
    "EdgeAuthLockouts",
    "EdgeAuthFailureBurst",
    "EdgePairingBacklog",
    "EdgePairingRequestsExpiring",
    "EdgeUpstreamErrors",
    "EdgeSlowRequests",
}
# What Grafana substitutes before a dashboard query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=DEPLOY
    )


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
    return queries


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "edge-alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def all_traffic_exposition(tmp_path: Path) -> str:
    """The exposition after requests of every kind, read through /metrics as a scraper would."""
    app = create_app(base_config(tmp_path, proxy={"trusted_proxies": ["203.0.113.0/24"]}))
    gateway = app.state.gateway
    device = Device("phone")
    remote = client_for(app, REMOTE)
    with client_for(app, LOOPBACK, "http://localhost:18789") as local:
        local.get("/api/devices")
        remote.get("/healthz", headers={"x-forwarded-for": "198.51.100.4"})
        remote.get("/healthz", headers={"x-forwarded-for": "unknown"})
        client_for(app, ("198.51.100.9", 1)).get("/api/devices", headers={"x-real-ip": "10.0.0.1"})
        with remote.websocket_connect("/ws") as ws:
            request_id = device.handshake(ws, {"token": GATEWAY_TOKEN})["requestId"]
        gateway.service.approve(request_id, actor="cli")
        with remote.websocket_connect("/ws") as ws:
            token = device.handshake(ws, {"token": GATEWAY_TOKEN})["deviceToken"]
        remote.get("/api/whoami", headers={"authorization": f"Bearer {token}"})
        gateway.metrics.upstream("app", 200, 0.01)
        gateway.metrics.upstream("app", None, 5.0)
        deadline = time.monotonic() + 10
        while (
            Exposition(local.get("/metrics").text).value(
                "edge_pairing_events_total", event="approved"
            )
            != 1
        ):
            assert time.monotonic() < deadline, "approval never counted"
            time.sleep(0.02)
        return str(local.get("/metrics").text)


# -- promtool ------------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check_rules() -> None:
    checked = promtool("check", "rules", "edge-alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    tested = promtool("test", "rules", "edge-alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    covered = set(re.findall(r"alertname: (\w+)", (DEPLOY / "edge-alerts.test.yml").read_text()))
    assert covered == ALERTS


def test_the_scrape_config_passes_promtool_check_config() -> None:
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_exposition_after_every_kind_of_traffic_passes_promtool_check_metrics(
    tmp_path: Path,
) -> None:
    text = all_traffic_exposition(tmp_path)
    checked = promtool("check", "metrics", stdin=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


def test_dashboard_and_alerts_only_use_metrics_the_gateway_exports(tmp_path: Path) -> None:
    exported = {name for name, _ in Exposition(all_traffic_exposition(tmp_path)).samples}
    for expression in dashboard_queries() + alert_expressions():
        for name in re.findall(r"\bedge_[a-z_]+", expression):
            assert name in exported, f"{name} in {expression!r} is not exported"


# -- a real Prometheus ---------------------------------------------------------------------------


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[EdgeServer], str]]:
    """Start Prometheus on loopback with the shipped configuration aimed at ``server``."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(server: EdgeServer) -> str:
        config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(DEPLOY / name) for name in config["rule_files"]]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("ab")
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(process)
        wait_for_port(port, proc=process)
        url = f"http://127.0.0.1:{port}"
        until(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, "ready")
        return url

    yield start
    for process in processes:
        stop_process(process)


def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.2)


def query(url: str, expression: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expression}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{expression!r}: {body}"
    return list(body["data"]["result"])


def test_a_real_prometheus_scrapes_the_gateway_and_evaluates_the_rules(
    edge_server_factory: Callable[..., EdgeServer],
    prometheus: Callable[[EdgeServer], str],
) -> None:
    server = edge_server_factory()
    url = prometheus(server)
    instance = f"127.0.0.1:{server.port}"

    (build,) = until(lambda: query(url, "edge_build_info"), "edge_build_info scraped")
    assert build["metric"] == {
        "__name__": "edge_build_info",
        "instance": instance,
        "job": "edge",
        "version": __version__,
    }
    assert build["value"][1] == "1"
    (up,) = query(url, 'up{job="edge"}')
    assert up["value"][1] == "1"

    # A forged X-Forwarded-For from a peer that is not a trusted proxy (the default: none is).
    for _ in range(3):
        httpx.get(f"{server.url}/healthz", headers={"x-forwarded-for": "127.0.0.1"}, timeout=5)
    until(
        lambda: query(url, 'edge_proxy_headers_total{outcome="untrusted_proxy_headers"} >= 3'),
        "the forged headers scraped",
    )
    alerts = until(
        lambda: [
            a
            for a in httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            if a["labels"]["alertname"] == "EdgeProxyHeaderAnomalies"
        ],
        "the anomaly alert evaluated",
    )
    assert alerts[0]["state"] == "pending"  # it fires after its 5 minutes
    assert alerts[0]["labels"]["outcome"] == "untrusted_proxy_headers"
    assert alerts[0]["labels"]["instance"] == instance

    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if any(rule["lastEvaluation"].startswith("0001-") for rule in rules):
            return None
        return rules

    rules = until(rules_evaluated, "every rule evaluated")
    assert {rule["name"] for rule in rules} == ALERTS
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    assert not [r["name"] for r in rules if r["state"] == "firing"]

    for expression in dashboard_queries():
        for variable, value in GRAFANA_VARIABLES.items():
            expression = expression.replace(variable, value)
        if expression.startswith("label_values("):
            assert httpx.get(f"{url}/api/v1/label/instance/values", timeout=5).json()["data"] == [
                instance
            ]
            continue
        query(url, expression)


def test_docs_list_every_metric_and_their_example_alerts_pass_promtool(tmp_path: Path) -> None:
    docs = (DEPLOY.parents[1] / "docs" / "metrics.md").read_text()
    families = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for name, _ in Exposition(all_traffic_exposition(tmp_path)).samples
    }
    for family in families:
        assert f"| `{family}` |" in docs, f"{family} is missing from the table in docs/metrics.md"
    (block,) = re.findall(r"### Example alerts.*?```yaml\n(.*?)```", docs, re.S)
    rules = yaml.safe_load(block)
    alerted = {
        name for rule in rules for name in re.findall(r"\b(?:edge|process)_[a-z_]+", rule["expr"])
    }
    # Every family of Edge's own and of the process has an example alert, but for
    # those no alert should fire on: reserved address space (resident memory is the
    # one to watch) and the interpreter's, there for the dashboards that read them.
    alertable = {
        family
        for family in families
        if not family.startswith("python_") and family != "process_virtual_memory_bytes"
    }
    assert {re.sub(r"_bucket$", "", name) for name in alerted} >= alertable
    rules_file = tmp_path / "docs-alerts.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "docs", "rules": rules}]}))
    checked = promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
