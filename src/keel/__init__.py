"""Keel: an LLMOps control plane in front of every LLM call."""

__version__ = "0.1.0"
