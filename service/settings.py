"""The one place that reads the service's environment: ``CROP_YIELD_*`` variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract import MODEL_NAME

DeviceSetting = Literal["auto", "cpu", "cuda"]
"""The device choices (``service.inference.device`` resolves them); defined here, where the
environment is read, so that reading settings does not import torch."""
RETRY_AFTER_S = 1
"""Seconds a refused client is asked to wait before retrying: HTTP's Retry-After (429, 503) and
gRPC's ``grpc-retry-pushback-ms`` (RESOURCE_EXHAUSTED, UNAVAILABLE)."""
MODEL_VERSION_HEADER = "x-model-version"
"""Request header naming the version a prediction route should use, and the response header
of every prediction route naming the version that answered (gRPC metadata alike)."""


class Settings(BaseSettings):
    """Service configuration; every field is set by ``CROP_YIELD_<FIELD_NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CROP_YIELD_", extra="ignore", frozen=True)

    model_tag: str = Field(
        f"{MODEL_NAME}:latest",
        description="Model-store tag to serve; a pinned version (name:version) serves that version "
        "alone unless CROP_YIELD_VERSION_POLICY says otherwise",
    )
    version_policy: str | None = Field(
        None,
        description="Which versions of the model are served side by side: latest:N (the N newest), "
        "all, or specific:V1,V2; unset = latest:1, or the version CROP_YIELD_MODEL_TAG pins",
    )
    default_version: str | None = Field(
        None, description="The version answering calls that name none; unset = the newest served"
    )
    model_control: Literal["none", "poll", "explicit"] = Field(
        "none",
        description="How the served versions change while serving (Triton's model control modes): none "
        "(fixed at start), poll (follow the model store under the version policy), explicit (the "
        "repository API under /v2/repository changes them)",
    )
    served_set_file: str | None = Field(
        None,
        description="explicit control: the file holding the served versions and the default, which "
        "every worker follows and which outlives a restart (a writable volume, or a mounted ConfigMap "
        "to edit instead of calling the API); unset = crop-yield-served.json in the BentoML home",
    )
    control_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between two looks at the model store (poll) or the served-set file",
    )
    version_weights: str | None = Field(
        None,
        description="Canary weights for calls that name no version, e.g. v1=90,v2=10 (versions not served "
        "are left out); unset = the default version answers them",
    )
    version_sticky_header: str = Field(
        "x-request-id",
        description="The request header (gRPC metadata) whose hash picks a call's version under "
        "CROP_YIELD_VERSION_WEIGHTS, so one key always reaches one version",
    )
    shadow_version: str | None = Field(
        None,
        description="A served version that also predicts, off the hot path, the calls that name no "
        "version; its answers are only compared (crop_yield_shadow_abs_difference)",
    )
    device: DeviceSetting = Field("auto", description="Where the model runs; auto = CUDA when available")
    max_rows_per_request: int = Field(
        10_000, ge=1, description="Most rows in one POST /predict (and in a batched V2 infer call)"
    )
    max_bulk_rows: int = Field(
        1_000_000, ge=1, description="Most rows in one POST /predict_columns or V2 infer call"
    )
    batching: bool = Field(True, description="Merge rows of concurrent /predict calls into one model call")
    max_batch_size: int = Field(10_000, ge=2, description="Most rows in one merged model call")
    max_latency_ms: int = Field(1_000, ge=1, description="Longest a row may wait in the batching queue")
    workers: int = Field(1, ge=1, description="Worker processes")
    graceful_shutdown_timeout: int = Field(
        20, ge=1, description="Seconds in-flight requests get to finish after SIGTERM"
    )
    request_timeout: float = Field(30.0, gt=0, description="Seconds before a request is answered 504")
    max_body_bytes: int = Field(
        41_943_040, ge=1024, description="Largest request body in bytes (40 MiB); larger gets 413"
    )
    max_concurrency: int = Field(
        256,
        ge=1,
        description="Requests in progress at once, counted once their body has arrived; more get 429",
    )
    body_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a request body may go without any bytes arriving (inactivity); longer gets 408",
    )
    body_min_rate: float = Field(
        500.0,
        ge=0,
        description="Least average bytes/s of a request body after CROP_YIELD_BODY_RATE_GRACE "
        "seconds; slower gets 408 (0: no minimum)",
    )
    body_rate_grace: float = Field(
        20.0, ge=0, description="Seconds a request body may take before CROP_YIELD_BODY_MIN_RATE applies"
    )
    memory_limit_mb: int | None = Field(
        None,
        ge=64,
        description="Memory limit (MiB) the bulk-request memory budget is drawn from; "
        "unset = the container's cgroup limit (none: no budget)",
    )
    memory_wait: float = Field(
        20.0, ge=0, description="Seconds a bulk request may wait for memory budget; longer gets 503"
    )
    auth_token: SecretStr | None = Field(
        None,
        description="Bearer token required on /predict*, /feedback, /metadata and /v2/models/*; "
        "unset = no authentication",
    )
    host: str = Field("0.0.0.0", description="Address to listen on")
    port: int = Field(3000, ge=1, le=65535, description="Port to listen on")
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="Port of the Open Inference Protocol over gRPC (0: no gRPC)"
    )
    trace_ratio: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of requests without a caller's traceparent that get OpenTelemetry spans "
        "(a caller's sampled flag is always followed; OTEL_TRACES_SAMPLER overrides); spans are made "
        "only when OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set",
    )
    access_log: bool = Field(False, description="One log line per request (costly; off by default)")
    monitoring: bool = Field(
        True, description="Count inputs outside the training range and histogram inputs and predictions"
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text, or json: one object per line (time, level, request id, route, status, message)",
    )
    # Payload logging (docs/payload-logging.md): each prediction call as two CloudEvents, as
    # KServe's inference logger sends them, POSTed by a background sender.
    payload_log_url: str | None = Field(
        None,
        description="Where payload logging POSTs each prediction call's request and response as "
        "CloudEvents: one or more http(s) URLs, comma-separated; unset = off",
    )
    payload_log_mode: Literal["all", "request", "response"] = Field(
        "all", description="Which events payload logging sends: all (both), request, or response"
    )
    payload_log_sample: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of prediction calls payload-logged, chosen by a hash of the request id "
        "(a call's request and response together)",
    )
    payload_log_kserve_ids: bool = Field(
        False,
        description="Give a call's request and response events the same ce-id, the request id, as "
        "KServe does (else each event has its own)",
    )
    payload_log_source: str | None = Field(
        None, description="The events' ce-source; unset = http://<host name>:<port>/"
    )
    payload_log_service_name: str = Field(
        "crop-yield", description="The events' ce-inferenceservicename (KServe's InferenceService name)"
    )
    payload_log_endpoint: str = Field(
        "default", description="The events' ce-endpoint: default, or canary on a canary's pods (as KServe)"
    )
    payload_log_queue_events: int = Field(
        10_000, ge=1, description="Most events waiting per sink in each worker; more are dropped"
    )
    payload_log_queue_bytes: int = Field(
        67_108_864,
        ge=1024,
        description="Most payload bytes waiting per sink in each worker (64 MiB); more are dropped",
    )
    payload_log_timeout: float = Field(
        2.0, gt=0, description="Seconds one delivery attempt of an event may take"
    )

    @property
    def model_name(self) -> str:
        return self.model_tag.partition(":")[0]

    @property
    def grpc_address(self) -> str:
        """Where gRPC listens, as grpcio spells it (an IPv6 host in brackets)."""
        host = self.host.strip("[]")
        return f"[{host}]:{self.grpc_port}" if ":" in host else f"{host}:{self.grpc_port}"

    @field_validator("version_sticky_header", mode="after")
    @classmethod
    def _header_names_are_lower_case(cls, name: str) -> str:
        return name.strip().lower()

    @field_validator("auth_token", mode="after")
    @classmethod
    def _empty_token_means_none(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty variable (e.g. an empty Secret key) must not become the token "".
        return token if token is not None and token.get_secret_value().strip() else None

    @property
    def payload_log_urls(self) -> tuple[str, ...]:
        """The payload-logging sinks (none: payload logging is off)."""
        return tuple(u.strip() for u in (self.payload_log_url or "").split(",") if u.strip())

    @field_validator("payload_log_url", mode="after")
    @classmethod
    def _payload_sinks_are_http(cls, urls: str | None) -> str | None:
        for url in (u.strip() for u in (urls or "").split(",") if u.strip()):
            scheme, _, rest = url.partition("://")
            if scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return urls


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
