"""Upstream adapters: one ``Upstream`` per configured provider.

Owns the wire formats Keel speaks to model servers (``openai_compat``,
``anthropic``, the built-in ``simulator``), translation between them and the
OpenAI shape, and the mapping of upstream failures to ``keel.errors``.
May import ``keel.config`` and ``keel.errors`` only.

Adapters are found by provider ``kind`` in a registry. Built-ins register
through ``register_provider`` exactly as a plugin would, and each factory
imports its module on first use, so importing this package stays cheap
(no aiohttp until a provider of that kind is built).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias, TypeVar

from keel.config import (
    AnthropicProvider,
    OpenAICompatProvider,
    ProviderConfig,
    SimulatorProvider,
)
from keel.errors import ConfigError
from keel.providers.base import Upstream, UpstreamCall

AnyProvider: TypeAlias = SimulatorProvider | OpenAICompatProvider | AnthropicProvider
UpstreamFactory: TypeAlias = Callable[[str, AnyProvider], Upstream]

__all__ = ["Upstream", "UpstreamCall", "UpstreamFactory", "build_upstream", "register_provider"]

_FACTORIES: dict[str, UpstreamFactory] = {}
_P = TypeVar("_P", SimulatorProvider, OpenAICompatProvider, AnthropicProvider)


def register_provider(kind: str) -> Callable[[UpstreamFactory], UpstreamFactory]:
    """Register ``factory(name, config) -> Upstream`` for providers of ``kind``."""

    def register(factory: UpstreamFactory) -> UpstreamFactory:
        if kind in _FACTORIES:
            raise ValueError(f"provider kind {kind!r} is already registered")
        _FACTORIES[kind] = factory
        return factory

    return register


def build_upstream(name: str, config: ProviderConfig) -> Upstream:
    """Build the adapter for provider ``name``. No I/O: connections open on first use."""
    factory = _FACTORIES.get(config.kind)
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise ConfigError(f"providers.{name}: unknown provider kind {config.kind!r} ({known})")
    return factory(name, config)


def _expect(config: AnyProvider, kind: type[_P]) -> _P:
    if not isinstance(config, kind):  # only reachable through a mis-registered factory
        raise TypeError(f"expected {kind.__name__}, got {type(config).__name__}")
    return config


@register_provider("openai_compat")
def _openai_compat(name: str, config: AnyProvider) -> Upstream:
    from keel.providers.openai_compat import OpenAICompatUpstream

    return OpenAICompatUpstream(_expect(config, OpenAICompatProvider), name=name)


@register_provider("anthropic")
def _anthropic(name: str, config: AnyProvider) -> Upstream:
    from keel.providers.anthropic import AnthropicUpstream

    return AnthropicUpstream(_expect(config, AnthropicProvider), name=name)


@register_provider("simulator")
def _simulator(name: str, config: AnyProvider) -> Upstream:
    from keel.providers.simulator import SimulatorUpstream

    return SimulatorUpstream(_expect(config, SimulatorProvider), name=name)
