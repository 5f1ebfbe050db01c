"""The national platform (1177 / NTjP) as the gateway calls it, one profile per version of
1177's contracts on the consumer side.

Role: the registry of national profiles (``PROFILES``: ``national.profile`` → the class in
``adapters/national/<profile>.py``) and the one way the composition root gets the adapter
the worker calls (``build``). A profile holds everything specific to one version of the
contracts: namespaces, element names, the result's shape. The worker, the store and the
API never change when a profile is added: add its module and its files under
``contracts/``, and list it here.

    patientportal-2.0   the current inbox (AddMessage 2.0, UpdateCaseStatus, RegisterCase); the default

May import: ``adapters.national.*``, ``adapters.base``, ``adapters.soap``, ``rivta``, ``model``,
``errors``.

Invariants: a name that is not in ``PROFILES`` is refused when the adapter is built
(``gateway check``, start-up), never replaced by the default.
"""

from __future__ import annotations

from typing import Any

from adapters.national.base import NAME, NationalProfile
from adapters.national.patientportal import PatientPortal20
from errors import ConfigError

DEFAULT_PROFILE = PatientPortal20.name
PROFILES: dict[str, type[NationalProfile]] = {p.name: p for p in (PatientPortal20,)}

#: The adapter of the default profile, by the name it had before there were profiles.
NationalAdapter = PatientPortal20


def profile(name: str) -> type[NationalProfile]:
    """The profile class called ``name``; ``ConfigError`` naming ``national.profile`` if none is."""
    found = PROFILES.get(name)
    if found is None:
        raise ConfigError(f"config key 'national.profile': there is no national profile '{name[:64]}' "
                          f"(there are: {', '.join(sorted(PROFILES))}).", field="national.profile")
    return found


def build(cfg: Any) -> NationalProfile:
    """The adapter the worker calls for the whole config ``cfg`` (``config.Config``):
    ``national.profile``'s class with the ``national`` section, the gateway's HSA-id as
    ``sourceSystem``."""
    return profile(cfg.national.profile)(cfg.national, source_system=cfg.gateway.hsa_id)


__all__ = ["DEFAULT_PROFILE", "NAME", "NationalAdapter", "NationalProfile", "PROFILES", "build", "profile"]
