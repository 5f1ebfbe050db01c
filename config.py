"""Configuration: one YAML file, environment overrides, secrets, validation.

Role: turn ``config.yaml`` (plus ``GATEWAY__SECTION__KEY`` environment variables) into a
validated, immutable ``Config``. Relative paths resolve against the config file's
folder; secrets are written ``{$env: NAME}`` or ``{$file: PATH}`` and held as
``SecretStr`` so they never print. A wrong file fails here, at start, with the dotted
key path and what to do (``ConfigError``, GW001).

May import: ``errors``, ``model``.

Invariants: ``load`` either returns a complete ``Config`` or raises ``ConfigError``;
no secret value appears in a ``ConfigError`` or in ``repr(config)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from errors import ConfigError, InvalidHsaId
from model import hsa_id

ENV_PREFIX = "GATEWAY__"
CONFIG_ENV = "GATEWAY_CONFIG"
MiB = 1024 * 1024


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return value


#: A filesystem path; relative paths resolve against the config file's folder.
RelPath = Annotated[Path, AfterValidator(_resolve_path)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    """Who the gateway is on the national platform."""

    name: str = "1177 integration gateway"
    hsa_id: str = Field(description="The gateway's own system HSA-id (sourceSystem on messages to 1177).")
    public_url: str | None = Field(
        default=None, description="Base URL 1177 reaches the gateway at; written into served WSDLs."
    )

    @field_validator("hsa_id")
    @classmethod
    def _hsa(cls, value: str) -> str:
        try:
            return hsa_id(value)
        except InvalidHsaId as exc:
            raise ValueError(exc.message) from None


class DatabaseSection(_Section):
    path: RelPath = Path("data/gateway.db")
    busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)


class ServerSection(_Section):
    bind: str = "127.0.0.1:8080"
    workers: int = Field(default=1, ge=1, le=64)
    threads: int = Field(default=8, ge=1, le=256)
    timeout_s: int = Field(default=120, ge=1)

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"'{value}' is not HOST:PORT")
        return value


class IntakeSection(_Section):
    """Limits on what 1177 may send (DESIGN.md rule 1)."""

    max_body_bytes: int = Field(default=150 * MiB, ge=64 * 1024)
    max_attachment_bytes: int = Field(default=20 * MiB, ge=1)
    max_attachments: int = Field(default=5, ge=0, le=5)


class MappingsSection(_Section):
    dir: RelPath = Path("mappings")


class LoggingSection(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class WorkerSection(_Section):
    enabled: bool = True
    heartbeat_s: int = Field(default=10, ge=1, le=3600)


class TargetSection(_Section):
    """A provider system the gateway delivers to (details grow with the adapters)."""

    kind: Literal["rest", "soap"]
    description: str | None = None
    base_url: str | None = None
    endpoint: str | None = None
    wsdl: RelPath | None = None


class Config(_Section):
    """The whole validated configuration."""

    gateway: GatewaySection
    database: DatabaseSection = DatabaseSection()
    server: ServerSection = ServerSection()
    intake: IntakeSection = IntakeSection()
    mappings: MappingsSection = MappingsSection()
    logging: LoggingSection = LoggingSection()
    worker: WorkerSection = WorkerSection()
    targets: dict[str, TargetSection] = Field(default_factory=dict)
    source: Path | None = Field(default=None, description="The file this was loaded from (set by load).")

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with secrets shown as '***' (for ``gateway check``)."""
        return self.model_dump(mode="json")


def _apply_env_overrides(data: dict[str, Any], environ: dict[str, str]) -> None:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if not all(keys):
            raise ConfigError(f"environment variable {name} has an empty key between '__'.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                path = ".".join(keys[: depth + 1])
                raise ConfigError(f"environment variable {name}: config key '{path}' is not a section.", field=path)
            node = child
        node[keys[-1]] = value


def _resolve_secrets(node: Any, base_dir: Path, environ: dict[str, str], path: str = "") -> Any:
    if isinstance(node, dict):
        if set(node) == {"$env"}:
            var = str(node["$env"])
            if var not in environ:
                raise ConfigError(
                    f"config key '{path}' reads environment variable {var}, which is not set.",
                    hint=f"Set {var} in the gateway's environment.",
                    field=path,
                )
            return environ[var]
        if set(node) == {"$file"}:
            file = Path(str(node["$file"]))
            file = file if file.is_absolute() else base_dir / file
            try:
                return file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(
                    f"config key '{path}' reads file {file}, which cannot be read ({exc.strerror}).",
                    hint="Create the file or correct the path (relative paths start at the config file's folder).",
                    field=path,
                ) from None
        return {k: _resolve_secrets(v, base_dir, environ, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_secrets(v, base_dir, environ, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def _as_config_error(exc: ValidationError) -> ConfigError:
    lines = []
    first_path = None
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in err["loc"])
        first_path = first_path or path
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (a typo?); config.example.yaml lists every key"
        elif err["type"] == "missing":
            msg = "is required"
        lines.append(f"'{path}': {msg}")
    return ConfigError("config key " + "; ".join(lines) + ".", field=first_path)


def load(path: str | os.PathLike[str] | None = None, *, environ: dict[str, str] | None = None) -> Config:
    """Load and validate the config file at ``path`` (default: ``$GATEWAY_CONFIG``)."""
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(
            "no config file given.",
            hint=f"Pass --config PATH or set {CONFIG_ENV}; config.example.yaml is a working start.",
        )
    file = Path(path).resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}.", hint="Check the path.") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {file} is not valid YAML{where}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a mapping of sections at the top level.")
    return from_dict(data, base_dir=file.parent, environ=environ, source=file)


def from_dict(
    data: dict[str, Any],
    *,
    base_dir: Path,
    environ: dict[str, str] | None = None,
    source: Path | None = None,
) -> Config:
    """Validate already-parsed config data (used by ``load`` and by tests)."""
    environ = dict(os.environ if environ is None else environ)
    data = _resolve_secrets(data, base_dir, environ)
    _apply_env_overrides(data, environ)
    data = _resolve_secrets(data, base_dir, environ)
    if source is not None:
        data["source"] = source
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise _as_config_error(exc) from None


__all__ = ["Config", "ConfigError", "SecretStr", "load", "from_dict", "CONFIG_ENV"]
