"""The built-in LLM simulator: a documented stand-in for a model server.

Owns the simulated behaviour (latency and time-to-first-token distributions,
tokens per second, error / 429 / timeout rates, scheduled and manual outages,
scripted answers with a quality knob, deterministic embeddings, seeded
reproducibility), its in-process ``Upstream`` and its HTTP server speaking the
OpenAI and Anthropic APIs (``keel sim``). See docs/simulator.md.

May import ``keel.config``, ``keel.errors``, ``keel.providers.base``, the
aiohttp-free error table ``keel.providers._errors`` (so it fails exactly as the
HTTP adapters do), starlette and orjson; never ``keel.api``, ``keel.cli`` or
other providers.
"""

from keel.providers.simulator.server import create_sim_app
from keel.providers.simulator.upstream import SimulatorUpstream

__all__ = ["SimulatorUpstream", "create_sim_app"]
