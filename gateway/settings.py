"""The gateway's one configuration object.

Values come, highest priority first, from keyword arguments, `HITL_*` environment variables (nested
fields with `__`, lists as JSON) and the TOML file named by `HITL_CONFIG`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Provider = Literal["openai", "litellm", "local"]
Api = Literal["chat", "responses", "messages"]


class UpstreamSettings(BaseModel):
    """One model the gateway offers, and where its answers come from."""

    name: str = Field(description="Model name clients send, e.g. `support-bot`.")
    provider: Provider = Field(
        "openai",
        description="`openai`: a server over httpx speaking `api` (any OpenAI-compatible server by default); "
        "`litellm`: any provider litellm knows; `local`: the bundled SmolLM2 model in this process.",
    )
    api: Api = Field(
        "chat",
        description="What an `openai` server speaks: `chat` (Chat Completions), `responses` (the OpenAI Responses "
        "API, asked for its logprobs with `include`) or `messages` (Anthropic Messages: no logprobs, scored by the "
        "self-check). Every client dialect is translated to it.",
    )
    model: str = Field("", description="The provider's model name (defaults to `name`).")
    api_base: str | None = Field(None, description="Base URL, e.g. `http://127.0.0.1:8080/v1`.")
    api_key: SecretStr | None = Field(None, description="The provider's key; never logged.")
    timeout: float = Field(60.0, gt=0, description="Seconds before the upstream call fails with 504.")
    logprobs: bool = Field(True, description="Ask the provider for token logprobs (top 5).")
    aliases: list[str] = Field(
        default_factory=list, description="More model names clients may send for it, e.g. `gpt-4o`."
    )

    @model_validator(mode="after")
    def _default_model(self) -> UpstreamSettings:
        if not self.model:
            self.model = self.name
        if self.provider == "openai" and not self.api_base:
            raise ValueError(f"upstream {self.name!r}: provider 'openai' needs api_base")
        if self.api != "chat" and self.provider != "openai":
            raise ValueError(f"upstream {self.name!r}: api {self.api!r} is spoken over provider 'openai' only")
        return self


class HoldSettings(BaseModel):
    """How long a held request waits for an agent."""

    default_wait: float = Field(20.0, ge=0, description="Seconds a held request waits by default.")
    max_wait: float = Field(120.0, ge=0, description="Longest wait a request may ask for (`hitl.wait`).")
    poll_interval: float = Field(
        1.0, gt=0, description="Seconds between database checks for decisions made by other processes."
    )
    keepalive: float = Field(
        5.0,
        gt=0,
        description="Seconds between SSE keep-alive comments while a streamed answer is held or still generating.",
    )


class LocalModelSettings(BaseModel):
    """The bundled SmolLM2-135M-Instruct model (extra `local`)."""

    enabled: bool = Field(True, description="Offer the bundled model when no upstream is configured.")
    name: str = Field("smollm2", description="Model name clients use for the bundled model.")
    max_tokens: int = Field(128, gt=0, description="Default `max_tokens` for the bundled model.")
    n_ctx: int = Field(2048, gt=0, description="Context window given to llama.cpp.")
    threads: int | None = Field(
        None,
        gt=0,
        description="CPU threads for llama.cpp (default: every core this process may use but one, so the web"
        " server and the console stay responsive while the model generates).",
    )


class LearnSettings(BaseModel):
    """`hitl learn` on a schedule inside `hitl serve`: one process at a time runs it (a lease in the database)."""

    every_seconds: float = Field(
        0.0, ge=0, description="Seconds between turns of `hitl learn`; 0: never (the default)."
    )
    target_escaped_error: float = Field(
        0.02, gt=0, lt=1, description="Share of released answers an agent would have changed, at most."
    )
    confidence: float = Field(0.95, ge=0.5, le=0.999, description="Of the interval whose upper end meets the target.")
    min_labels: int = Field(100, ge=2, description="A calibration group with fewer labels takes the pooled one.")


class NotifySettings(BaseModel):
    """`hitl notify` on a schedule inside `hitl serve` (one process at a time, by a lease): the messages the
    policy's `notify` asks for, to Slack-compatible webhooks and by e-mail through this SMTP server."""

    every_seconds: float = Field(
        0.0, ge=0, description="Seconds between turns of `hitl notify`; 0: never (the default)."
    )
    console_url: str = Field(
        "http://127.0.0.1:8000", description="Where people reach the console: every message links to it."
    )
    digest_hour: int = Field(8, ge=0, le=23, description="The hour (UTC) from which each day's digest is sent.")
    smtp_host: str | None = Field(None, description="The SMTP server e-mail goes through (none: no e-mail).")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_from: str = Field("hitl@localhost", description="The sender of the e-mails.")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    max_attempts: int = Field(8, ge=1, description="Attempts before a message is given up as failed.")


class QualitySettings(BaseModel):
    """How reviewers are checked: gold items served among their reviews, and held answers reviewed twice."""

    gold_share: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="After each decision, the chance that the agent is served a gold item next (0: never).",
    )
    second_review_rate: float = Field(
        0.0, ge=0, le=1, description="The share of decided held answers that a second agent reviews independently."
    )


class RetentionSettings(BaseModel):
    """How long conversations are kept, and how a customer's are found to erase them."""

    days: float = Field(
        0.0, ge=0, description="Days a conversation is kept before `hitl purge` removes it (0: kept until erased)."
    )
    keep: Literal["labels", "nothing"] = Field(
        "labels",
        description="What a purge leaves: `labels` (the decision, its label, the confidence and signals, without"
        " the request, the answers or any text) or `nothing`.",
    )
    user_field: str = Field(
        "user",
        description="Dotted path in the request body to the customer's id that `hitl erase --user` matches"
        " (e.g. `user`, `safety_identifier` or `metadata.customer_id`).",
    )
    every_seconds: float = Field(
        0.0, ge=0, description="Seconds between purges inside `hitl serve` (one process at a time); 0: never."
    )


class TracingSettings(BaseModel):
    """OpenTelemetry traces, exported over OTLP/HTTP."""

    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP collector base URL, e.g. `http://otel-collector:4318` (unset: no traces)."
    )
    service_name: str = Field("hitl-gateway", description="`service.name` of this gateway's spans.")


class SelfCheckSettings(BaseModel):
    """A second call that asks a judge model whether the candidate answer is right."""

    mode: Literal["always", "grey_zone", "never"] = Field(
        "grey_zone",
        description="`always`; `grey_zone`: only when the logprob confidence is missing or within "
        "[grey_low, grey_high]; `never`.",
    )
    grey_low: float = Field(0.5, ge=0, le=1, description="Lower end of the grey zone.")
    grey_high: float = Field(0.97, ge=0, le=1, description="Upper end of the grey zone.")
    judge: str | None = Field(None, description="Model name of the judge (default: the answering model).")
    weight: float = Field(0.5, ge=0, le=1, description="Share of the self-check in the uncalibrated confidence.")

    @model_validator(mode="after")
    def _ordered(self) -> SelfCheckSettings:
        if self.grey_low > self.grey_high:
            raise ValueError("selfcheck.grey_low must not exceed selfcheck.grey_high")
        return self


class ConsistencySettings(BaseModel):
    """SelfCheckGPT-style consistency: `samples` more answers, and the self-check judge says whether each
    agrees with the candidate. Cost per scored exchange: `samples` extra upstream answers (as long as the
    candidate) plus `samples` one-token judge calls; on the bundled model they run one after another."""

    samples: int = Field(0, ge=0, le=10, description="Extra answers sampled per exchange; 0 turns the signal off.")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature of the extra answers.")
    weight: float = Field(0.25, ge=0, le=1, description="Share of consistency in the uncalibrated confidence.")


class AuditSettings(BaseModel):
    """Human-on-the-loop: a share of released answers also goes to the `audit` queue for a label."""

    rate: float = Field(0.02, ge=0, le=1, description="Share of released answers sampled for audit (0.02 = 2%).")
    tier: str = Field("audit", description="Queue that audit reviews go to; any agent may decide them.")


class WebhookSettings(BaseModel):
    """Delivery of each API key's webhooks (the key's endpoint is set with `hitl keys webhook`)."""

    enabled: bool = Field(True, description="Run the delivery loop in this process (one process holds the lease).")
    poll_interval: float = Field(1.0, gt=0, description="Seconds between looks at the outbox for due events.")
    lease: float = Field(15.0, gt=0, description="Seconds the sending process holds the delivery lease unrenewed.")
    timeout: float = Field(10.0, gt=0, description="Seconds an endpoint has to answer one delivery.")
    max_attempts: int = Field(12, ge=1, description="Attempts before a delivery is marked failed (console retry).")
    backoff_base: float = Field(2.0, gt=0, description="Seconds before the first retry; doubling, with jitter.")
    backoff_max: float = Field(3600.0, gt=0, description="Longest wait between two attempts, in seconds.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HITL_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    database_url: str = Field(
        "sqlite:///hitl.db",
        description="SQLAlchemy URL: `sqlite:///file.db` or `postgresql://user@host/db`.",
    )
    policy_path: Path | None = Field(None, description="Policy YAML file (default: the bundled policy).")
    policy_refresh_seconds: float = Field(
        30.0,
        gt=0,
        description="How often each process checks for a policy version `hitl learn` applied or"
        " `hitl policy rollback` took back.",
    )
    upstreams: list[UpstreamSettings] = Field(
        default_factory=list, description="Models offered; JSON list in `HITL_UPSTREAMS`."
    )
    local_model: LocalModelSettings = Field(default_factory=LocalModelSettings)
    hold: HoldSettings = Field(default_factory=HoldSettings)
    selfcheck: SelfCheckSettings = Field(default_factory=SelfCheckSettings)
    learn: LearnSettings = Field(default_factory=LearnSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    consistency: ConsistencySettings = Field(default_factory=ConsistencySettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    secret_key: SecretStr | None = Field(
        None, description="Signs console sessions; set it when running more than one replica."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "Addresses or networks (CIDR) of the reverse proxies in front of the gateway: only their"
            " X-Forwarded-For and X-Forwarded-Proto are believed (the client's address for the login throttle,"
            " https for Secure cookies). Empty: no proxy is trusted, loopback included."
        ),
    )
    session_max_age: int = Field(
        8 * 3600, gt=0, description="Seconds a console login lasts, however active (then log in again)."
    )
    claim_lease: float = Field(
        90.0, gt=0, description="Seconds a claim on a review lasts unless the open review page renews it."
    )
    login_max_failures: int = Field(
        5, gt=0, description="Failed logins per username (x4 per address) before logins are refused for a while."
    )
    login_window: float = Field(900.0, gt=0, description="Seconds failed logins are counted over, and locked out.")
    undo_seconds: float = Field(
        5.0,
        ge=0,
        description="Seconds a console decision can be taken back (key `u`) before it takes effect and the client"
        " is answered; a client whose deadline falls sooner is answered at once. 0 turns undo off.",
    )
    alert_seconds: float = Field(
        10.0,
        ge=0,
        description="The console alerts (title, favicon badge, a tone the agent can turn off) when a waiting"
        " client has less than this many seconds left before its deadline outcome; 0 turns the alert off.",
    )
    guidelines_path: Path | None = Field(
        None, description="The team's guidelines, a Markdown file shown in the console (page, and key `g` on a review)."
    )
    check_seconds: float = Field(
        2.0,
        gt=0,
        description="Seconds the review desk gives one check of an agent's edit against the request's schema (or"
        " one diff preview) in its sandbox process; past it the check is stopped and the edit refused, not sent.",
    )
    key_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="Seconds each process remembers an API key it looked up: a disabled key is refused everywhere "
        "within this time. 0 looks the key up on every request.",
    )
    idempotency_window: float = Field(
        3600.0,
        ge=0,
        description="Seconds a repeated request (same `Idempotency-Key`, or an OpenAI SDK retry of the same body) "
        "joins the exchange it repeats instead of making another; 0 turns this off.",
    )
    default_upstream: str | None = Field(
        None,
        description="Upstream that answers any model name not declared (the exchange keeps the name sent).",
    )
    shutdown_timeout: int = Field(
        15,
        gt=0,
        description="Seconds `hitl serve` gives open requests on SIGTERM, after answering every waiting client.",
    )
    drain_seconds: float = Field(
        0.0,
        ge=0,
        description="Seconds `hitl serve` keeps serving after SIGTERM while /health/ready answers 503, so a load"
        " balancer stops sending it requests first; then it answers waiting clients and exits (0: at once).",
    )
    worker_startup_timeout: int = Field(
        60,
        gt=0,
        description="Seconds `hitl serve --workers N` gives a worker to start and answer its first health check"
        " (at least 5 times what the parent took to build the app); starting took 9 s on a loaded 2-core machine.",
    )
    host: str = Field("127.0.0.1", description="Address `hitl serve` binds.")
    port: int = Field(8000, description="Port `hitl serve` binds.")

    def offered(self) -> list[str]:
        """Model names clients may ask for: the configured upstreams, or the bundled model."""
        return [upstream.name for upstream in self.upstreams] or [self.local_model.name]

    @model_validator(mode="after")
    def _names_are_unambiguous(self) -> Settings:
        seen: dict[str, str] = {}
        for upstream in self.upstreams:
            for name in (upstream.name, *upstream.aliases):
                if name in seen:
                    raise ValueError(f"model name {name!r} is declared by both {seen[name]!r} and {upstream.name!r}")
                seen[name] = upstream.name
        if self.default_upstream is not None and self.default_upstream not in self.offered():
            raise ValueError(
                f"default_upstream {self.default_upstream!r} is not one of the models offered: {self.offered()}"
            )
        return self

    @model_validator(mode="after")
    def _judge_is_offered(self) -> Settings:
        names = self.offered()
        judge = self.selfcheck.judge
        if judge and self.selfcheck.mode != "never" and judge not in names:
            raise ValueError(f"selfcheck.judge {judge!r} is not one of the models offered: {names}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("HITL_CONFIG")
        if config:
            path = Path(config)
            if not path.is_file():
                raise FileNotFoundError(f"HITL_CONFIG names {path}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
