"""docs/pairing.md's walkthrough, run command by command: ``edge serve``, nginx, a phone's Chromium.

The commands come out of the page's ``sh`` blocks, so the page and this test
cannot drift: a command the test does not know how to run fails it. What a
test cannot do on a real host is stood in for, openly and nowhere else:

- ``pip install edge-gateway``: the package under test is already importable;
  the test checks that the name is the one ``pyproject.toml`` publishes;
- ``sudo cp ... nginx``: nginx runs the very ``deploy/nginx`` files the
  commands copy, with only ports and paths replaced (``start_nginx``, which
  runs ``nginx -t`` first), under the test's user; it is started when its
  address is first needed (the configuration names it);
- ``edge.example.com`` and port 18789 become nginx's and Edge's loopback ports,
  and nginx's self-signed certificate is passed to ``--probe`` with
  ``--ca-file`` (a real host has a public certificate);
- the request id the page shows replaces the example one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PageOpener
from tests.browser.test_browser_behind_nginx import PHONE
from tests.integration.conftest import free_port, stop_process, wait_for_port
from tests.integration.proxies import Nginx, start_nginx

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "pairing.md"
SECTION = "## Walkthrough: from `pip install` to a phone paired behind nginx"
NGINX_STEPS = [
    "sudo cp deploy/nginx/conf.d/edge.conf /etc/nginx/conf.d/edge.conf",
    "sudo cp deploy/nginx/snippets/edge-forwarded.conf /etc/nginx/snippets/edge-forwarded.conf",
    "sudo nginx -t",
    "sudo systemctl reload nginx",
]
EXAMPLE_REQUEST = "K7QF-2M9D"


def walkthrough_commands(text: str) -> list[str]:
    """Every command of the section's ``sh`` blocks, a here-document kept as one command."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    for block in re.findall(r"^ *```sh\n(.*?)^ *```", section, flags=re.M | re.S):
        lines = textwrap.dedent(block).splitlines()
        while lines:
            line = lines.pop(0).strip()
            if not line:
                continue
            heredoc = re.search(r"<<'(\w+)'", line)
            if heredoc:
                body = []
                while lines and lines[0] != heredoc.group(1):
                    body.append(lines.pop(0))
                lines.pop(0)
                line = "\n".join([line, *body, heredoc.group(1)])
            commands.append(line)
    return commands


def test_the_walkthrough_has_the_commands_this_test_runs() -> None:
    commands = walkthrough_commands(PAGE.read_text(encoding="utf-8"))
    assert commands[0] == "pip install edge-gateway"
    assert [c for c in commands if c.startswith("sudo ")] == NGINX_STEPS
    assert "edge serve -c edge.yaml &" in commands
    # After `edge serve -c`, nothing needs -c: the commands find the running gateway.
    after = commands[commands.index("edge serve -c edge.yaml &") + 1 :]
    assert [c for c in after if c.startswith("edge ") and "-c" in c.split()] == []


class Host:
    """The gateway host: a working directory, ``edge`` on PATH, Edge and nginx as the doc starts them."""

    def __init__(self, directory: Path, edge_port: int) -> None:
        self.directory = directory
        self.edge_port = edge_port
        self.nginx: Nginx | None = None
        self.serve: subprocess.Popen[Any] | None = None
        bin_dir = directory / "bin"
        bin_dir.mkdir()
        wrapper = bin_dir / "edge"
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m edge.cli "$@"\n')
        wrapper.chmod(0o755)
        self.cwd = directory / "edge-host"
        self.cwd.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        self.env["PATH"] = f"{bin_dir}:{self.env.get('PATH', '')}"
        self.env["EDGE_RUNTIME_DIR"] = str(directory / "run")
        self.env["EDGE_PAIR_DIR"] = str(directory / "pair")
        self.env["PYTHONPATH"] = str(REPO)

    @property
    def public_url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url

    def ensure_nginx(self) -> Nginx:
        """nginx on the shipped files, started when its address is first needed (the config)."""
        if self.nginx is None:
            self.nginx = start_nginx(self.directory / "nginx", self.edge_port, free_port())
        return self.nginx

    def rewrite(self, command: str) -> str:
        command = command.replace("18789", str(self.edge_port))
        if "https://edge.example.com" in command:
            command = command.replace("https://edge.example.com", self.ensure_nginx().url)
        return command

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result

    def start_serve(self, command: str) -> None:
        assert command.endswith(" &")
        log = (self.directory / "serve.log").open("ab")
        self.serve = subprocess.Popen(
            ["bash", "-c", f"exec {command.removesuffix(' &')}"],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.edge_port, proc=self.serve)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.edge_port}/readyz").status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError("edge serve never became ready")

    def stop(self) -> None:
        if self.serve is not None:
            stop_process(self.serve)
        if self.nginx is not None:
            self.nginx.stop()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    started = Host(tmp_path, free_port())
    yield started
    started.stop()


def test_every_command_of_the_walkthrough_pairs_a_phone_behind_nginx(
    open_page: PageOpener, host: Host
) -> None:
    commands = walkthrough_commands(PAGE.read_text(encoding="utf-8"))
    published = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    phone: Any = None
    request_id: str | None = None
    nginx_steps: list[str] = []
    for command in commands:
        if command.startswith("pip install "):
            assert command.split()[2:] == [published]
        elif command.startswith("sudo "):
            nginx_steps.append(command)
            host.ensure_nginx()  # the shipped files, checked with nginx -t, running
        elif command.startswith("edge serve "):
            host.start_serve(host.rewrite(command))
        elif command.startswith("edge doctor --probe "):
            assert host.nginx is not None
            probe = host.run(f"{host.rewrite(command)} --ca-file {host.nginx.cert}")
            assert "forwarded the request with x-forwarded-for" in probe.stdout, probe.stdout
            assert f"the page https://127.0.0.1:{host.nginx.https_port}" in probe.stdout
        elif command == "edge token show":
            token = host.run(command).stdout.strip()
            phone = open_page(f"{host.public_url}/", **PHONE)
            phone.expect_state("token-needed")
            phone.page.get_by_test_id("token-input").fill(token)
            phone.page.get_by_test_id("device-name-input").fill("phone")
            phone.page.get_by_test_id("token-submit").click()
            phone.expect_state("waiting")
            request_id = phone.page.get_by_test_id("request-id").inner_text().strip()
        elif command == "edge devices list":
            assert request_id is not None
            assert request_id in host.run(command).stdout
        elif command.startswith("edge devices approve "):
            assert request_id is not None and command.endswith(EXAMPLE_REQUEST)
            host.run(command.replace(EXAMPLE_REQUEST, request_id))
        elif command.startswith(("cat > ", "edge ")):
            host.run(host.rewrite(command))
        else:
            raise AssertionError(f"the walkthrough has a command this test cannot run: {command}")
    assert nginx_steps == NGINX_STEPS
    assert phone is not None, "the walkthrough never reached the phone"
    phone.expect_state("connected")
    expect(phone.page.get_by_test_id("device-role")).to_have_text("user")
    phone.shoot("walkthrough-phone-connected")
