"""RadCheck settings: the only reader of the environment.

Every value can be set with an environment variable named ``RADCHECK_<GROUP>__<FIELD>`` (for example
``RADCHECK_DATABASE__URL`` or ``RADCHECK_MODEL__BACKEND``), or in a ``.env`` file in the working directory.
Invalid values stop the process at start-up with a message naming the variable.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "RADCHECK_"
ENV_NESTED_DELIMITER = "__"


class ModelBackend(StrEnum):
    """Which vision-language backend the checker uses."""

    NONE = "none"
    TRANSFORMERS = "transformers"
    OPENAI = "openai"


class StorageSettings(BaseModel):
    """Where RadCheck keeps files."""

    data_dir: Path = Field(
        default=Path("radcheck-data"),
        description="Data directory: DICOM files (content-addressed) and the embedded SQLite database.",
    )
    max_upload_bytes: Annotated[int, Field(gt=0)] = Field(
        default=256 * 1024 * 1024, description="Largest accepted DICOM file, in bytes."
    )
    max_upload_files: Annotated[int, Field(gt=0)] = Field(
        default=200, description="Most files accepted in one upload request."
    )


class DatabaseSettings(BaseModel):
    """The database: SQLite inside the data directory unless a URL is given."""

    url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL, e.g. postgresql+psycopg://radcheck:secret@db:5432/radcheck. "
            "Default: sqlite:///<data_dir>/radcheck.db"
        ),
    )
    pool_size: Annotated[int, Field(gt=0)] = 10
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _known_dialect(cls, value: str | None) -> str | None:
        if value is None or value.startswith(("sqlite", "postgresql")):
            return value
        raise ValueError(
            "must start with 'sqlite' or 'postgresql' (for example "
            "'postgresql+psycopg://user:password@host:5432/radcheck')"
        )


class WorkerSettings(BaseModel):
    """Check-job workers."""

    in_process: bool = Field(
        default=True,
        description="Run one worker thread inside `radcheck serve` (embedded default).",
    )
    poll_interval_s: Annotated[float, Field(gt=0)] = 0.5
    lease_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="A running job whose lease is older than this is claimed again."
    )
    max_attempts: Annotated[int, Field(ge=1)] = 3
    alive_after_s: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="Readiness: a worker seen within this many seconds counts as alive.",
    )


class IngestSettings(BaseModel):
    """Study completeness."""

    quiet_period_s: Annotated[float, Field(gt=0)] = Field(
        default=10.0,
        description="A study is complete after this many seconds without a new instance.",
    )
    selection_rules: Path | None = Field(
        default=None, description="JSON or YAML series-selection rules (default: built-in rules)."
    )


class ModelSettings(BaseModel):
    """The vision-language model."""

    backend: ModelBackend = ModelBackend.NONE
    model_dir: Path | None = Field(
        default=None,
        description="Local checkpoint folder (transformers backend). Never downloaded.",
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda|cuda:\d+)$",
        description="auto, cpu, cuda or cuda:N",
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto", description="auto: float16 on CUDA, float32 on CPU (bf16 needs sm80+)"
    )
    quantization: Literal["none", "nf4"] = Field(
        default="none", description="none or nf4 (needs bitsandbytes)"
    )
    slicing: bool = Field(
        default=False, description="High-resolution slicing (only for checkpoints trained with it)."
    )
    max_slices: Annotated[int, Field(ge=1, le=16)] = 7
    token_budget: Annotated[int, Field(ge=64)] = Field(
        default=1500, description="Visual tokens per study when slicing (fits a 16 GB V100)."
    )
    budget_policy: Literal["none", "pool", "attention"] = "pool"
    openai_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint, e.g. http://gpu-node:8000/v1"
    )
    openai_api_key: SecretStr | None = None
    openai_model: str = "llava-rad"
    timeout_s: Annotated[float, Field(gt=0)] = 120.0

    @model_validator(mode="after")
    def _backend_needs(self) -> ModelSettings:
        if self.backend == ModelBackend.TRANSFORMERS and self.model_dir is None:
            raise ValueError(
                "backend 'transformers' needs RADCHECK_MODEL__MODEL_DIR (the local checkpoint folder)"
            )
        if self.backend == ModelBackend.OPENAI and not self.openai_base_url:
            raise ValueError(
                "backend 'openai' needs RADCHECK_MODEL__OPENAI_BASE_URL (e.g. http://gpu-node:8001/v1)"
            )
        return self


class ApiSettings(BaseModel):
    """The HTTP server."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] = 8000


class AuthSettings(BaseModel):
    """People logging in: sessions, lock-out, and (production) an OIDC identity provider."""

    session_ttl_s: Annotated[float, Field(gt=0)] = Field(
        default=8 * 3600, description="A login session ends this many seconds after login."
    )
    idle_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=30 * 60, description="A session unused for this long ends."
    )
    max_failed_logins: Annotated[int, Field(ge=1)] = Field(
        default=5, description="Consecutive failed logins that lock an account."
    )
    lockout_s: Annotated[float, Field(gt=0)] = Field(
        default=15 * 60, description="How long a locked account stays locked."
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="OIDC issuer whose ID tokens the API accepts as Bearer tokens (e.g. "
        "https://login.example.org/realms/radiology). Users still need a local account.",
    )
    oidc_audience: str | None = Field(
        default=None, description="The client id the ID token must be issued to."
    )
    oidc_jwks_url: str | None = Field(
        default=None, description="The issuer's JWKS URL (default: <issuer>/.well-known/jwks.json)."
    )
    oidc_username_claim: str = Field(
        default="preferred_username", description="Claim matched to a local username."
    )

    @field_validator("oidc_issuer", "oidc_jwks_url")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL, e.g. https://login.example.org/realms/x")
        return value

    @model_validator(mode="after")
    def _oidc_complete(self) -> AuthSettings:
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError(
                "oidc_issuer needs RADCHECK_AUTH__OIDC_AUDIENCE (the client id tokens are issued to)"
            )
        return self


class UiSettings(BaseModel):
    """The Streamlit dashboard."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] = 8501
    api_url: str | None = Field(
        default=None,
        description="The API the dashboard calls (default: http://<api host>:<api port>/api/v1).",
    )
    timeout_s: Annotated[float, Field(gt=0)] = 10.0


class Settings(BaseSettings):
    """All of RadCheck's configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    storage: StorageSettings = StorageSettings()
    database: DatabaseSettings = DatabaseSettings()
    worker: WorkerSettings = WorkerSettings()
    ingest: IngestSettings = IngestSettings()
    model: ModelSettings = ModelSettings()
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    ui: UiSettings = UiSettings()
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return upper

    @property
    def database_url(self) -> str:
        """The effective database URL (SQLite in the data directory by default)."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.storage.data_dir / 'radcheck.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        """Where DICOM files are stored, content-addressed."""
        return self.storage.data_dir / "files"


class SettingsError(Exception):
    """The configuration is invalid; the message names the environment variable to fix."""


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part).upper() for part in loc)


# RADCHECK_ variables that are not settings of the service (tests, the model server).
OTHER_VARIABLES = frozenset({"RADCHECK_MODEL_SERVER_API_KEY", "RADCHECK_API_KEY"})
OTHER_PREFIXES = ("RADCHECK_TEST_",)


def known_variables() -> set[str]:
    """Every environment variable name the settings read."""
    names: set[str] = set()
    for group, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(
                f"{ENV_PREFIX}{group.upper()}{ENV_NESTED_DELIMITER}{sub.upper()}"
                for sub in annotation.model_fields
            )
        else:
            names.add(f"{ENV_PREFIX}{group.upper()}")
    return names


def load_settings() -> Settings:
    """Read and validate the settings, or raise SettingsError naming each bad variable.

    A misspelt ``RADCHECK_`` variable is an error too: silently ignoring it would, for example, run
    on the embedded SQLite database when PostgreSQL was meant.
    """
    known = known_variables()
    problems = [
        f"{name}: not a RadCheck setting (see the README's configuration table)"
        for name in sorted(os.environ)
        if name.upper().startswith(ENV_PREFIX)
        and name.upper() not in known
        and name.upper() not in OTHER_VARIABLES
        and not name.upper().startswith(OTHER_PREFIXES)
    ]
    settings: Settings | None = None
    try:
        settings = Settings()
    except ValidationError as exc:
        problems += [f"{_env_name(err['loc'])}: {err['msg']}" for err in exc.errors()]
    if problems or settings is None:
        raise SettingsError("Invalid RadCheck configuration:\n  " + "\n  ".join(problems))
    return settings
