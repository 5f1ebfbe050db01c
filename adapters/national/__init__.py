"""The national platform (1177 / NTjP) as the gateway calls it, one profile per version of
1177's contracts on the consumer side.

Role: the registry of national profiles (``PROFILES``: ``national.profile`` → the class in
``adapters/national/<profile>.py``) and the one way the composition root gets the adapter
the worker calls (``build``). A profile holds everything specific to one version of the
contracts: namespaces, element names, the result's shape. The worker, the store and the
API never change when a profile is added: add its module and its files under
``contracts/``, and list it here.

    patientportal-2.0   the current inbox (AddMessage 2.0, UpdateCaseStatus, RegisterCase); the default
    mvk-inbox-2.0       the legacy MVK inbox (AddMessage 2.0 of urn:mvk:crm:casemanagement:inbox):
                        INFO notices without files, no status, no RegisterCase

May import: ``adapters.national.*``, ``adapters.base``, ``adapters.soap``, ``rivta``, ``model``,
``errors``.

Invariants: a name that is not in ``PROFILES``, or a config that turns on what the profile
cannot carry, is refused (``ProfileConfigError``, GW086) when the adapter is built (start-up)
and by ``gateway check`` (``problems``), never replaced by the default or ignored.
"""

from __future__ import annotations

from typing import Any

from adapters.national.base import NAME, Carries, NationalProfile
from adapters.national.mvk_inbox import MvkInbox20
from adapters.national.patientportal import PatientPortal20
from errors import GatewayError, ProfileConfigError

DEFAULT_PROFILE = PatientPortal20.name
PROFILES: dict[str, type[NationalProfile]] = {p.name: p for p in (PatientPortal20, MvkInbox20)}

#: The adapter of the default profile, by the name it had before there were profiles.
NationalAdapter = PatientPortal20


def profile(name: str) -> type[NationalProfile]:
    """The profile class called ``name``; ``ProfileConfigError`` naming ``national.profile`` if none is."""
    found = PROFILES.get(name)
    if found is None:
        raise ProfileConfigError(f"config key 'national.profile': there is no national profile '{name[:64]}' "
                          f"(there are: {', '.join(sorted(PROFILES))}).", field="national.profile")
    return found


def build(cfg: Any) -> NationalProfile:
    """The adapter the worker calls for the whole config ``cfg`` (``config.Config``):
    ``national.profile``'s class with the ``national`` section, the gateway's HSA-id as
    ``sourceSystem``. Refuses (the first of ``problems``) a config the profile cannot carry."""
    chosen = profile(cfg.national.profile)
    found = chosen.problems(cfg)
    if found:
        raise found[0]
    return chosen(cfg.national, source_system=cfg.gateway.hsa_id)


def problems(cfg: Any) -> list[GatewayError]:
    """Everything ``gateway check`` reports about the national side of ``cfg``: an unknown
    profile, settings it cannot carry, contract files it cannot load (built without a call)."""
    try:
        chosen = profile(cfg.national.profile)
    except GatewayError as exc:
        return [exc]
    found: list[GatewayError] = list(chosen.problems(cfg))
    try:
        chosen(cfg.national, source_system=cfg.gateway.hsa_id).close()
    except GatewayError as exc:
        found.append(exc)
    return found


def warnings(cfg: Any) -> list[str]:
    """What ``gateway check`` shows as WARN about the national side (an unknown profile: none)."""
    chosen = PROFILES.get(cfg.national.profile)
    return chosen.warnings(cfg) if chosen is not None else []


def check(cfg: Any) -> list[tuple[str, str]]:
    """``gateway check``'s lines about the national side: ``(level, text)`` with level
    ``WARN``, ``FAIL`` (each of ``problems``) or ``ok`` (the profile and what it calls)."""
    lines = [("WARN", text) for text in warnings(cfg)]
    found = problems(cfg)
    lines += [("FAIL", f"national: {problem}") for problem in found]
    if not found:
        carries = PROFILES[cfg.national.profile].carries()
        lines.append(("ok", f"national profile {carries.profile}: {', '.join(carries.calls)} at {cfg.national.endpoint}"))
    return lines


__all__ = ["Carries", "DEFAULT_PROFILE", "NAME", "NationalAdapter", "NationalProfile", "PROFILES", "build", "problems",
           "profile", "warnings", "check"]
