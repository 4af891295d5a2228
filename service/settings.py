"""Service configuration, read once from LRSEARCH_* environment variables."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from search.model_size import DEFAULT_MAX_MEMORY_MB, DEFAULT_MAX_PARAMS, ModelBudget


class Settings(BaseSettings):
    """Everything the API, workers and CLI need; each field documents its env variable."""

    model_config = SettingsConfigDict(env_prefix="LRSEARCH_", populate_by_name=True, extra="ignore")

    database_url: str = Field(
        default="sqlite:///./var/lrsearch.db",
        description="SQLAlchemy URL shared by API and workers (SQLite or PostgreSQL). "
        "Env LRSEARCH_DATABASE_URL, else DATABASE_URL.",
        validation_alias=AliasChoices("LRSEARCH_DATABASE_URL", "DATABASE_URL"),
    )
    data_dir: Path = Field(default=Path("./var"), description="Where uploaded datasets are stored.")
    auth: bool = Field(
        default=False,
        description="Require Bearer tokens. Off by default for a single user on loopback; "
        "turn it on before listening on any other interface.",
    )
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, description="Largest dataset file accepted (bytes)."
    )
    max_stored_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Largest dataset as stored once normalised (float32 features, the labels), "
        "checked before it is written: a small compressed upload can expand a hundredfold. "
        "Default: 4 x max_upload_bytes.",
    )
    max_decompressed_bytes: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="Most bytes an uploaded NPZ's arrays may decompress to (read from its "
        "headers and refused before anything is decompressed).",
    )
    allow_insecure: bool = Field(
        default=False,
        description="Let `api`, `serve` and `dashboard` listen beyond loopback without "
        "authentication (refused otherwise: anyone who reaches the port would use it).",
    )
    host: str = Field(default="127.0.0.1", description="Interface the API listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the API listens on.")
    heartbeat_interval_s: int = Field(
        default=5, ge=1, description="Seconds between worker heartbeats of a running trial."
    )
    grace_period_s: int = Field(
        default=30, ge=1, description="Seconds without heartbeat before a running trial is failed."
    )
    checkpoint_every_s: float = Field(
        default=30.0,
        ge=0,
        description="A worker saves a running trial's state at most every this many seconds "
        "(and when it is stopped); a retry resumes from the last save. 0: every epoch.",
    )
    rate_limit_per_minute: int = Field(
        default=60, ge=1, description="Study creations allowed per token (or tenant) per minute."
    )
    max_running_studies: int = Field(
        default=20, ge=1, description="Queued plus running studies allowed per tenant."
    )
    max_datasets: int = Field(default=100, ge=1, description="Stored datasets allowed per tenant.")
    max_model_bytes: int = Field(
        default=512 * 1024 * 1024, gt=0, description="Largest .keras model file accepted (bytes)."
    )
    max_models: int = Field(default=50, ge=1, description="Stored model files allowed per tenant.")
    max_model_params: int = Field(
        default=DEFAULT_MAX_PARAMS,
        ge=1,
        description="Most weights (parameters) a study's model or an uploaded model file may "
        "have, estimated at submit from the spec and the dataset's shape.",
    )
    max_model_memory_mb: int = Field(
        default=DEFAULT_MAX_MEMORY_MB,
        ge=1,
        description="Most training memory (MiB) a study's model may need by the submit-time "
        "estimate: weights, gradients, optimizer state and a batch's activations.",
    )
    metrics_token_required: bool = Field(
        default=False,
        description="Require a valid Bearer token (any tenant's) on /metrics, which otherwise "
        "shows anyone the service-wide counts of trials, studies, queue and workers.",
    )
    require_live_plugin: bool = Field(
        default=True,
        description="Refuse (422) a study whose task.plugin no live worker offers. Turn it "
        "off when workers start after studies are queued (scaled from zero by KEDA); such a "
        "study then waits for a worker that has its plugin.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="With auth off, the host names (besides localhost and IP addresses) the "
        "API and the dashboard answer in a request's Host header; any other is refused (403) "
        "so that a web page cannot reach them through a rebound DNS name. Env: "
        "comma-separated names, or a JSON list.",
    )
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Directories (shared storage, mounted at the same path on the workers) "
        "whose files a tenant may register as datasets by path. Env: a JSON list, or paths "
        "separated by the OS path separator (':').",
    )

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        """`/a:/b` as well as `["/a", "/b"]` (pydantic-settings parses the JSON form)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [p for p in text.split(os.pathsep) if p]

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        """`a,b` as well as `["a", "b"]`; blanks dropped."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list):
            return [str(name).strip() for name in value if str(name).strip()]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _plain_names(cls, names: list[str]) -> list[str]:
        """A name is compared with the Host header's name part: a port or URL never matches."""
        for name in names:
            if not _HOST_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a host name (write it without scheme or port)")
        return names

    @property
    def stored_bytes_limit(self) -> int:
        """max_stored_bytes, or 4 x max_upload_bytes when unset (an uncompressed uint8 upload
        normalises to float32, 4x its size)."""
        return self.max_stored_bytes or STORED_PER_UPLOAD_BYTE * self.max_upload_bytes

    @property
    def model_budget(self) -> ModelBudget:
        """The parameter and memory budget every study's model is held to at submit."""
        return ModelBudget(self.max_model_params, self.max_model_memory_mb)


STORED_PER_UPLOAD_BYTE = 4
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
