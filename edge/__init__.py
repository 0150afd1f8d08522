"""Edge: a reverse-proxy-aware edge gateway.

``edge.create_app(config)`` is the public entry point. It is imported lazily so
that the pure layers (``edge.net``, ``edge.pairing``) load without Starlette.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "create_app"]

if TYPE_CHECKING:
    from edge.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from edge.app import create_app

        return create_app
    raise AttributeError(name)
