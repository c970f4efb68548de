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
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from medvlm.budget import BudgetPolicy
from medvlm.runtime.config import DEFAULT_TOKEN_BUDGET, Backend, DType, Quantization

ENV_PREFIX = "RADCHECK_"
ENV_NESTED_DELIMITER = "__"


ModelBackend = Backend
"""Which vision-language backend the checker uses (the runtime's own enum)."""


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
    max_inflated_bytes: Annotated[int, Field(gt=0)] = Field(
        default=256 * 1024 * 1024,
        description="Largest data set a Deflated Explicit VR Little Endian file may inflate to "
        "(checked while inflating, before pydicom parses it).",
    )
    max_pixel_bytes: Annotated[int, Field(gt=0)] = Field(
        default=512 * 1024 * 1024,
        description="Largest decoded pixel data (Rows x Columns x frames x samples x bytes per "
        "sample), checked from the header before anything is decoded.",
    )


class ChecksSettings(BaseModel):
    """Limits on what one report check may cost (issue 16)."""

    max_report_chars: Annotated[int, Field(ge=1000, le=1_000_000)] = Field(
        default=20_000,
        description="Longest accepted report (all sections together, in characters); a chest "
        "X-ray report is rarely above 3,000. Longer reports are refused with 413 at every door.",
    )
    time_budget_s: Annotated[float, Field(gt=0)] = Field(
        default=300.0,
        description="A check (text, header and model stages together) that runs past this fails "
        "with its reason instead of holding the worker.",
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
    dtype: DType = Field(
        default=DType.AUTO, description="auto: float16 on CUDA, float32 on CPU (bf16 needs sm80+)"
    )
    quantization: Quantization = Field(
        default=Quantization.NONE, description="none or nf4 (needs bitsandbytes)"
    )
    slicing: bool = Field(
        default=False, description="High-resolution slicing (only for checkpoints trained with it)."
    )
    max_slices: Annotated[int, Field(ge=1, le=16)] = 7
    token_budget: Annotated[int, Field(ge=64)] = Field(
        default=DEFAULT_TOKEN_BUDGET,
        description="Visual tokens per study when slicing (fits a 16 GB V100).",
    )
    budget_policy: BudgetPolicy = "pool"
    openai_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint, e.g. http://gpu-node:8000/v1"
    )
    openai_api_key: SecretStr | None = None
    openai_model: str = "llava-rad"
    timeout_s: Annotated[float, Field(gt=0)] = 120.0
    max_grounding_calls: Annotated[int, Field(ge=0, le=32)] = Field(
        default=4,
        description="Findings grounded (boxes from relevance maps) per check; 0 turns grounding off.",
    )
    grounding_method: Literal["gradient_x_input", "occlusion"] = Field(
        default="gradient_x_input",
        description="gradient_x_input (about 3 forward passes per finding) or occlusion (MONAI, "
        "one forward pass per occluded patch: 64)",
    )

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


MODEL_SERVER_API_KEY_ENV = "RADCHECK_MODEL_SERVER_API_KEY"
"""The environment variable ``radcheck model serve`` reads its API key from by default."""
MIN_API_KEY_LENGTH = 16
"""The shortest API key the model server accepts (characters)."""
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - only with an API key, and documented

_NEW_KEY_HINT = "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback interface (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ModelServerSettings(BaseModel):
    """How ``radcheck model serve`` binds and authenticates: the one place its security rule lives.

    The key comes from the environment only (never the command line, which ``ps`` shows) and has
    at least :data:`MIN_API_KEY_LENGTH` characters. Without a key the default interface is
    loopback and any other interface is refused (anyone who can reach the port could use the
    model), unless RadCheck API keys (``radcheck_keys``) authenticate every request; with a key
    the default is every interface.
    """

    model_config = ConfigDict(frozen=True)

    host: str | None = Field(default=None, description="Interface asked for (None: the default).")
    port: Annotated[int, Field(ge=0, lt=65536)] = 8001
    api_key: SecretStr | None = None
    api_key_env: str = Field(
        default=MODEL_SERVER_API_KEY_ENV, description="The variable the key was read from."
    )
    radcheck_keys: bool = False

    @property
    def bind(self) -> str:
        """The interface to bind: ``host``, else every interface with a key, else loopback."""
        return self.host or (ALL_INTERFACES if self.api_key is not None else LOOPBACK)

    @property
    def unauthenticated(self) -> bool:
        """Whether anyone who reaches the port may use the model (loopback only, by the rule)."""
        return self.api_key is None and not self.radcheck_keys

    @model_validator(mode="after")
    def _key_or_loopback(self) -> ModelServerSettings:
        if self.api_key is not None and len(key := self.api_key.get_secret_value()) < (
            MIN_API_KEY_LENGTH
        ):
            raise ValueError(
                f"the API key in {self.api_key_env} has {len(key)} characters, fewer than "
                f"{MIN_API_KEY_LENGTH}: use a random one ({_NEW_KEY_HINT})"
            )
        if self.unauthenticated and not is_loopback(self.bind):
            raise ValueError(
                f"refusing to serve the model on {self.bind}:{self.port} without an API key "
                "(anyone who can reach it could use the model): set "
                f"{MODEL_SERVER_API_KEY_ENV} (or --api-key-env VAR) to a random key of "
                f"{MIN_API_KEY_LENGTH}+ characters, or bind --host {LOOPBACK}"
            )
        return self

    @classmethod
    def from_environment(
        cls,
        host: str | None,
        port: int,
        api_key_env: str | None = None,
        radcheck_keys: bool = False,
    ) -> ModelServerSettings:
        """Read the key from ``$api_key_env`` when named (it must then be set), else from
        ``$RADCHECK_MODEL_SERVER_API_KEY`` when set, else none; validate the rule.

        Raises:
            ValueError: the named variable is unset, the key is too short, or a non-loopback
                interface was asked for without any key (the message says which and what to do).
        """
        name = api_key_env or MODEL_SERVER_API_KEY_ENV
        value = os.environ.get(name, "").strip()
        if api_key_env and not value:
            raise ValueError(
                f"--api-key-env: environment variable {api_key_env} is not set or empty: export "
                f"the key there (e.g. `export {api_key_env}=$(python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')`)"
            )
        try:
            return cls(
                host=host,
                port=port,
                api_key=SecretStr(value) if value else None,
                api_key_env=name,
                radcheck_keys=radcheck_keys,
            )
        except ValidationError as exc:
            raise ValueError(
                "; ".join(str(err.get("ctx", {}).get("error", err["msg"])) for err in exc.errors())
            ) from None


AE_TITLE_PATTERN = (
    r"^[!-~](?:[ -~]{0,14}[!-~])?$"  # 1-16 printable ASCII, no leading/trailing space
)


class PacsNode(BaseModel):
    """One remote DICOM node (a PACS, a VNA, a router): reached by DICOMweb, by DIMSE, or both.

    Used to pull studies in (``POST /api/v1/pacs/retrieve``) and to send results out.
    """

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="How RadCheck refers to the node, e.g. 'orthanc' (letters, digits, . _ -).",
    )
    dicomweb_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="DICOMweb root (QIDO/WADO/STOW), e.g. http://orthanc:8042/dicom-web",
    )
    username: str | None = Field(default=None, description="DICOMweb: HTTP basic user")
    password: SecretStr | None = Field(default=None, description="DICOMweb: HTTP basic password")
    bearer_token: SecretStr | None = Field(
        default=None, description="DICOMweb: bearer token (instead of basic auth)"
    )
    ae_title: str | None = Field(
        default=None, pattern=AE_TITLE_PATTERN, description="DIMSE: the node's AE title"
    )
    host: str | None = Field(default=None, description="DIMSE: the node's host name or address")
    port: Annotated[int, Field(gt=0, lt=65536)] | None = Field(
        default=None, description="DIMSE: the node's port"
    )
    retrieve: Literal["auto", "dicomweb", "c-get", "c-move"] = Field(
        default="auto",
        description="How studies are pulled: auto = DICOMweb when a URL is set, else C-GET.",
    )
    timeout_s: Annotated[float, Field(gt=0)] = 60.0

    @property
    def has_dicomweb(self) -> bool:
        return self.dicomweb_url is not None

    @property
    def has_dimse(self) -> bool:
        return self.ae_title is not None and self.host is not None and self.port is not None

    @property
    def retrieve_method(self) -> Literal["dicomweb", "c-get", "c-move"]:
        if self.retrieve != "auto":
            return self.retrieve
        return "dicomweb" if self.has_dicomweb else "c-get"

    @model_validator(mode="after")
    def _reachable(self) -> PacsNode:
        dimse = (self.ae_title, self.host, self.port)
        if any(v is not None for v in dimse) and not self.has_dimse:
            raise ValueError(f"PACS node {self.name!r}: DIMSE needs all of ae_title, host and port")
        if not self.has_dicomweb and not self.has_dimse:
            raise ValueError(
                f"PACS node {self.name!r} needs a dicomweb_url, or ae_title + host + port"
            )
        if self.retrieve == "dicomweb" and not self.has_dicomweb:
            raise ValueError(f"PACS node {self.name!r}: retrieve 'dicomweb' needs a dicomweb_url")
        if self.retrieve in ("c-get", "c-move") and not self.has_dimse:
            raise ValueError(
                f"PACS node {self.name!r}: retrieve {self.retrieve!r} needs ae_title, host, port"
            )
        if self.username is not None and self.bearer_token is not None:
            raise ValueError(f"PACS node {self.name!r}: set username/password or bearer_token")
        return self


class PacsSettings(BaseModel):
    """Remote DICOM nodes, set as JSON in RADCHECK_PACS__NODES, e.g.
    ``[{"name": "orthanc", "dicomweb_url": "http://orthanc:8042/dicom-web",
    "ae_title": "ORTHANC", "host": "orthanc", "port": 4242}]``."""

    nodes: list[PacsNode] = Field(default_factory=list, description="The configured PACS nodes")
    calling_ae_title: str = Field(
        default="RADCHECK",
        pattern=AE_TITLE_PATTERN,
        description="RadCheck's AE title when it calls a node (C-FIND/C-GET/C-MOVE/C-STORE), "
        "and the C-MOVE destination (the listener's AE title, known to the PACS)",
    )

    @field_validator("nodes")
    @classmethod
    def _unique_names(cls, nodes: list[PacsNode]) -> list[PacsNode]:
        names = [n.name for n in nodes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"PACS node names must be unique; repeated: {', '.join(duplicates)}")
        return nodes

    def node(self, name: str) -> PacsNode | None:
        """The node called ``name``, or None."""
        return next((n for n in self.nodes if n.name == name), None)


class ListenerSettings(BaseModel):
    """The DICOM C-STORE listener (``radcheck dicom listen``, one process per port)."""

    ae_title: str = Field(
        default="RADCHECK", pattern=AE_TITLE_PATTERN, description="Called AE title it answers to"
    )
    host: str = Field(default="0.0.0.0", description="Bind address")  # noqa: S104 - a DICOM node
    port: Annotated[int, Field(gt=0, lt=65536)] = 11112
    allowed_calling_aes: list[Annotated[str, Field(pattern=AE_TITLE_PATTERN)]] = Field(
        default_factory=list,
        description="Calling AE titles allowed to send (JSON list); empty refuses everyone",
    )
    allowed_peers: list[str] = Field(
        default_factory=list,
        description='Optional peer IP addresses or networks (JSON list, e.g. ["10.0.0.0/8"]); '
        "empty: any address with an allowed AE title",
    )
    drain_s: Annotated[float, Field(gt=0)] = Field(
        default=30.0, description="On SIGTERM, running associations get this long to finish"
    )
    max_associations: Annotated[int, Field(ge=1)] = 10
    min_free_bytes: Annotated[int, Field(ge=0)] = Field(
        default=1024**3,
        description="Below this much free space in the data dir, stores answer 0xA700",
    )

    @field_validator("allowed_peers")
    @classmethod
    def _networks(cls, peers: list[str]) -> list[str]:
        import ipaddress

        for peer in peers:
            try:
                ipaddress.ip_network(peer, strict=False)
            except ValueError:
                raise ValueError(
                    f"{peer!r} is not an IP address or network (e.g. 10.1.2.3 or 10.0.0.0/8)"
                ) from None
        return peers


class DicomWebSettings(BaseModel):
    """RadCheck's own DICOMweb service (STOW-RS in; QIDO-RS and WADO-RS out) under /dicomweb."""

    public_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="How clients reach RadCheck, e.g. https://radcheck.hospital.org: RetrieveURLs "
        "are built from it (default: from the request)",
    )
    max_request_bytes: Annotated[int, Field(gt=0)] = Field(
        default=4 * 1024**3, description="Largest STOW-RS request body (bytes, counted as streamed)"
    )
    max_parts: Annotated[int, Field(gt=0)] = Field(
        default=10000, description="Most instances in one STOW-RS request"
    )


class ExportMode(StrEnum):
    """When check results are sent back to the PACS."""

    MANUAL = "manual"
    AUTO_ON_COMPLETE = "auto_on_complete"
    AFTER_ACCEPT = "after_accept"


class ExportSettings(BaseModel):
    """Results back to the PACS as DICOM SR, text SR and GSPS (docs/pacs-results.md)."""

    destination: str | None = Field(
        default=None,
        description="Name of the RADCHECK_PACS__NODES entry results are sent to (none: no export)",
    )
    mode: ExportMode = Field(
        default=ExportMode.MANUAL,
        description="manual (POST /api/v1/checks/{id}/export), auto_on_complete (when a check "
        "finishes) or after_accept (when a radiologist accepts a flag of the check)",
    )
    method: Literal["auto", "stow-rs", "c-store"] = Field(
        default="auto", description="auto: STOW-RS when the node has a dicomweb_url, else C-STORE"
    )
    max_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        default=5, description="Sends tried before an export is marked failed (its error kept)"
    )
    retry_backoff_s: Annotated[float, Field(ge=0)] = Field(
        default=30.0, description="Wait before retry n: n times this many seconds"
    )


class ApiSettings(BaseModel):
    """The HTTP server."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] = 8000
    docs: bool = Field(
        default=True,
        description="Serve the Swagger UI page at /api/v1/docs (assets served locally); "
        "turn off in production (compose.yaml does).",
    )
    header_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=10.0,
        description="A request line and its headers must arrive within this many seconds of "
        "their first byte (slow or stalled clients get 408 and are disconnected).",
    )
    read_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="A request body that stalls for this many seconds is dropped.",
    )
    max_connections_per_peer: Annotated[int, Field(ge=0)] = Field(
        default=64,
        description="Open connections one client address may hold; more get 503. 0: no bound "
        "(behind a reverse proxy every client has the proxy's address: raise it or use 0). "
        "Counted per API process.",
    )
    processes: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description="API processes sharing the port (about one per core). Above 1 the check "
        "worker, when in-process, runs as its own process instead.",
    )


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


class Hl7Settings(BaseModel):
    """The HL7 v2 report listener (`radcheck hl7 listen`) and file import."""

    host: str = Field(default="127.0.0.1", description="Bind address (loopback unless opened up).")
    port: Annotated[int, Field(ge=0, lt=65536)] = Field(
        default=2575, description="MLLP port (2575 is HL7's registered port; 0 picks a free one)."
    )
    allowed_peers: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description='Peers allowed to connect: IP addresses or CIDR networks (JSON list, e.g. ["10.1.2.0/24"]).',
    )
    max_message_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=1024 * 1024, description="Largest accepted message (the MLLP frame's content)."
    )
    idle_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="A connection idle (or mid-message) for this long is closed."
    )
    accession_field: Literal["OBR-3", "OBR-18"] = Field(
        default="OBR-3", description="Where the RIS puts the accession number: OBR-3 or OBR-18."
    )
    application: str = Field(
        default="RADCHECK", max_length=64, description="Our name in the ACK (MSH-3)."
    )

    @field_validator("allowed_peers")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"{item!r} is not an IP address or CIDR network (e.g. 10.1.2.3 or 10.1.2.0/24)"
                ) from exc
        return value


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
    checks: ChecksSettings = ChecksSettings()
    database: DatabaseSettings = DatabaseSettings()
    worker: WorkerSettings = WorkerSettings()
    ingest: IngestSettings = IngestSettings()
    model: ModelSettings = ModelSettings()
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    ui: UiSettings = UiSettings()
    hl7: Hl7Settings = Hl7Settings()
    pacs: PacsSettings = PacsSettings()
    listener: ListenerSettings = ListenerSettings()
    dicomweb: DicomWebSettings = DicomWebSettings()
    export: ExportSettings = ExportSettings()
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return upper

    @model_validator(mode="after")
    def _export_destination(self) -> Settings:
        name = self.export.destination
        if name is not None and self.pacs.node(name) is None:
            known = ", ".join(n.name for n in self.pacs.nodes) or "none configured"
            raise ValueError(
                f"export destination {name!r} is not a RADCHECK_PACS__NODES name ({known})"
            )
        if self.export.mode != ExportMode.MANUAL and name is None:
            raise ValueError(
                f"export mode {self.export.mode.value!r} needs RADCHECK_EXPORT__DESTINATION"
            )
        node = self.pacs.node(name) if name is not None else None
        if node is not None:
            if self.export.method == "stow-rs" and not node.has_dicomweb:
                raise ValueError(f"export method 'stow-rs' needs a dicomweb_url on node {name!r}")
            if self.export.method == "c-store" and not node.has_dimse:
                raise ValueError(f"export method 'c-store' needs ae_title/host/port on {name!r}")
        return self

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
OTHER_VARIABLES = frozenset({MODEL_SERVER_API_KEY_ENV, "RADCHECK_API_KEY"})
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
