"""What a reload may change, held in one place: ``Live`` and the ``LiveConfig`` it holds.

Components that read reloadable configuration (trusted proxies, origins,
local rules, metrics access, logging) take the ``Live`` holder and read
``live.config`` when they decide. ``reload`` swaps the whole ``LiveConfig`` in
one assignment, so a request sees either the old or the new configuration,
never a mixture. What is fixed at start (routes, upstreams, where metrics are
served) is passed to components as plain settings instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.config import Settings
from edge.config.policies import build_metrics_networks, build_policy
from edge.net import NetworkSet, ResolverPolicy


@dataclass(frozen=True)
class LiveConfig:
    """The parts of the configuration a reload may change, swapped as one value."""

    settings: Settings
    policy: ResolverPolicy
    allowed_origins: frozenset[str]
    metrics_networks: NetworkSet


def live_config(settings: Settings) -> LiveConfig:
    policy = build_policy(settings)
    return LiveConfig(
        settings=settings,
        policy=policy,
        allowed_origins=policy.allowed_origins,
        metrics_networks=build_metrics_networks(settings),
    )


class Live:
    """The running ``LiveConfig``; ``replace`` is the one way it changes."""

    __slots__ = ("config",)

    def __init__(self, settings: Settings) -> None:
        self.config = live_config(settings)

    @property
    def settings(self) -> Settings:
        return self.config.settings

    def replace(self, config: LiveConfig) -> None:
        self.config = config
