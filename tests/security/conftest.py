"""Real ``edge serve`` processes for the attacker's tests (the integration fixtures)."""

from __future__ import annotations

from tests.integration.conftest import edge_server_factory  # noqa: F401  (fixture)
