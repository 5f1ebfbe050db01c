"""Adapters: everything that opens an outbound connection, one class per kind of target.

Role: a small registry (``kind`` → class) and one base contract (``base.Adapter``):
deliver a case, deliver a message, each with a body the worker already built from the
target's field map, and an idempotency key that is the same on every attempt. Provider
systems: ``rest`` (requests) and ``soap`` (zeep). Only the worker calls adapters.

May import: ``rivta``, ``model``, ``errors``, ``config`` (for the target's settings).
Never the store, never Flask.

Invariants: an adapter either returns an ``Answer`` for a 2xx/successful call or raises
a ``DeliveryError`` whose ``permanent`` flag says whether a retry can help; its messages
carry no payload, person id or secret.
"""

from __future__ import annotations

from typing import Any

from adapters.base import Adapter, Answer, Request
from adapters.rest import RestAdapter
from adapters.soap import SoapAdapter

REGISTRY: dict[str, type[Adapter]] = {RestAdapter.kind: RestAdapter, SoapAdapter.kind: SoapAdapter}


def build(name: str, settings: Any) -> Adapter:
    """The adapter for target ``name`` from its config section (``settings.kind`` picks the class)."""
    return REGISTRY[settings.kind](name, settings)


__all__ = ["Adapter", "Answer", "Request", "REGISTRY", "build"]
