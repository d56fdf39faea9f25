"""Configuration, read once from the environment; nothing else reads ``os.environ``."""

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy import make_url

from shared.core.topology import SERVICES


class Section(BaseModel):
    """A part of ``Settings`` (``settings.metrics``) whose fields keep the variable names
    operators set (``METRICS_PORT``, not ``METRICS__METRICS_PORT``)."""


class TracingSettings(Section):
    """The standard OpenTelemetry variables shared.core.tracing reads itself (the SDK and its
    exporters read the rest: ``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``, ...)."""

    otel_sdk_disabled: bool = Field(False, description="true: no tracing, whatever else is set.")
    otel_traces_exporter: str = Field(
        "", description="otlp, console, or any span exporter installed; unset: off."
    )
    otel_exporter_otlp_endpoint: str = Field(
        "", description="Where OTLP sends; set alone, it turns tracing on (otlp)."
    )
    otel_exporter_otlp_traces_endpoint: str = Field(
        "", description="Where OTLP sends spans, if not the endpoint above; set alone: otlp."
    )
    otel_exporter_otlp_protocol: str = Field(
        "", description="grpc for OTLP over gRPC; otherwise HTTP/protobuf."
    )
    otel_exporter_otlp_traces_protocol: str = Field(
        "", description="The protocol for spans, if not the one above."
    )
    otel_service_name: str = Field(
        "", description="The service.name of every span; unset: the service's own name."
    )

    def exporters(self) -> list[str]:
        """Entry point names of the span exporters asked for; none: tracing is off."""
        if self.otel_sdk_disabled:
            return []
        names = self.otel_traces_exporter or (
            "otlp" if self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint
            else ""
        )  # fmt: skip
        chosen = [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]
        protocol = self.otel_exporter_otlp_traces_protocol or self.otel_exporter_otlp_protocol
        otlp = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
        return [otlp if n == "otlp" else n for n in chosen]


class MetricsSettings(Section):
    """A service worker's Prometheus endpoint (shared.ops.metrics)."""

    metrics_port: int = Field(9808, description="Port of this worker's /metrics endpoint.")
    metrics_addr: str = Field(
        "127.0.0.1", description="Address /metrics listens on (0.0.0.0 for every interface)."
    )
    metrics_targets_dir: Path | None = Field(
        None,
        description="Directory where the worker writes its /metrics address while it runs"
        " (Prometheus file_sd_configs); unset: nowhere.",
    )
    prometheus_multiproc_dir: Path | None = Field(
        None,
        description="Where each worker makes the directory of its own its pool processes"
        " count in; unset: the system's temporary directory.",
    )


class CredentialSettings(Section):
    """Who each service is on the broker and the database (read by ``topology apply``)."""

    service_user_prefix: str = Field(
        "", description="Prefix of every service's user/role name, e.g. 'staging-'."
    )
    service_passwords: dict[str, str] = Field(
        default_factory=dict,
        description="Per service, SERVICE_PASSWORDS__NOTIFIER=...; unset: '<service>-local'.",
    )

    def user(self, service: str) -> str:
        return f"{self.service_user_prefix}{service}"

    def password(self, service: str) -> str:
        return self.service_passwords.get(service, f"{service}-local")

    def uses_local_passwords(self) -> list[str]:
        """Services whose password is the well-known default, unset or set to it."""
        return [name for name in SERVICES if self.password(name) == f"{name}-local"]

    def amqp_url(self, service: str, base: str) -> str:
        """``base`` (one URL or a ';' failover list) as ``service``'s user."""
        user, password = quote(self.user(service), safe=""), quote(self.password(service), safe="")
        urls = []
        for url in filter(None, (u.strip() for u in base.split(";"))):
            parts = urlsplit(url)
            netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5672}"
            urls.append(urlunsplit(parts._replace(netloc=netloc)))
        return ";".join(urls)

    def database_url(self, service: str, base: str) -> str:
        """``base`` as ``service``'s role."""
        url = make_url(base).set(username=self.user(service), password=self.password(service))
        return url.render_as_string(hide_password=False)


class _Sections(EnvSettingsSource):
    """Each section's fields from their own variables, as pydantic-settings reads a field of
    ``Settings`` (``SERVICE_PASSWORDS__NOTIFIER`` fills the dict ``service_passwords``)."""

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name in self.settings_cls.sections():  # type: ignore[attr-defined]
            section = self.settings_cls.model_fields[name].annotation
            assert isinstance(section, type) and issubclass(section, Section)
            values = {}
            for field_name, field in section.model_fields.items():
                value, _, is_complex = self.get_field_value(field, field_name)
                value = self.prepare_field_value(field_name, field, value, is_complex)
                if value is not None:
                    values[field_name] = value
            found[name] = values
        return found


class Settings(BaseSettings):
    """Every knob an operator sets, with defaults that work on a developer's machine."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    eventful_system: str = Field(
        "services",
        description="The module whose SERVICES lists the services this system runs"
        " (shared/core/system.py).",
    )
    amqp_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672//",
        description="Broker URL; several separated by ';' form Celery's failover list.",
    )
    database_url: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:5432/eventful",
        description="PostgreSQL URL (SQLAlchemy form) for service data and task results.",
    )
    rabbitmq_management_url: str = Field(
        "http://guest:guest@127.0.0.1:15672",
        description="Management API URL(s), ';'-separated, used by the operations CLI.",
    )
    rabbitmq_metrics_url: str = Field(
        "http://127.0.0.1:15692",
        description="RabbitMQ's Prometheus exporter (rabbitmq_prometheus), scraped by"
        " `make run`'s Prometheus.",
    )
    local_mode: bool = Field(
        False,
        description="A developer's machine (make run, make test, make demo): secrets that are"
        " not set take their well-known local defaults instead of refusing to start.",
    )
    operator_user: str = Field(
        "guest",
        description="The operator's broker user: a worker runs any task it publishes"
        " (DLQ replays), as it does its own (shared/worker/allowed.py).",
    )
    task_time_limit: int = Field(
        25 * 60,
        description="Global hard time limit, seconds; below broker_consumer_timeout, or the"
        " broker cancels the delivery first and the message runs again (eventful check).",
    )
    task_soft_time_limit: int = Field(20 * 60, description="Global soft time limit, seconds.")
    result_expires: int = Field(3600, description="Seconds before results are cleaned up.")
    result_synchronous_commit: bool = Field(
        False,
        description="Wait for the WAL flush on every result write, not only on the rows of"
        " group and chord members (slower, see results.py).",
    )
    result_write_delay: float = Field(
        0.02,
        description="Seconds a STARTED row, or a SUCCESS no workflow reads, waits in a pool"
        " process before it is written with the others then pending (results.py).",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Worker logs: text, or json (one object a line)."
    )
    task_log_lines: bool = Field(
        True,
        description="Workers log Celery's INFO line per task received and per task done"
        " (succeeded, retried); false keeps warnings and errors only (metrics still count"
        " every task): about 0.25 ms of CPU per task.",
    )
    chord_timeout: int = Field(
        3600,
        description="Seconds a chord waits for its header tasks before it fails and its unlock"
        " message is dead-lettered (reason chord-timeout).",
    )
    broker_consumer_timeout: float = Field(
        1800,
        description="The broker's consumer_timeout in seconds (rabbitmq.conf; RabbitMQ's"
        " default is 30 minutes): every task's time limit must stay below it.",
    )
    outbox_max_attempts: int = Field(
        10,
        ge=1,
        description="Tries after which an outbox row that fails on its own (not the broker) is"
        " parked for an operator (`eventful outbox status`, `outbox retry|drop`).",
    )
    retry_delay_scale: float = Field(
        1.0, description="Multiplies every retry delay; tests and demos shorten waits with it."
    )
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    permissions: CredentialSettings = Field(default_factory=CredentialSettings)

    @classmethod
    def sections(cls) -> list[str]:
        """The fields that are sections, each read from its own fields' variables."""
        return [
            name
            for name, field in cls.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
        ]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment fills the sections too, under their fields' own names."""
        sections = _Sections(settings_cls, env_nested_delimiter="__")
        return init_settings, env_settings, sections, dotenv_settings, file_secret_settings

    @property
    def amqp_urls(self) -> list[str]:
        return [u.strip() for u in self.amqp_url.split(";") if u.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()


def redact(urls: str) -> str:
    """``urls`` (one, or several separated by ';') with every password replaced by ``**``:
    the form a URL takes in any message, log line or printed output."""
    redacted = []
    for url in urls.split(";"):
        parts = urlsplit(url)
        if parts.password is None:
            redacted.append(url)
            continue
        host = parts.netloc.rpartition("@")[2]
        redacted.append(urlunsplit(parts._replace(netloc=f"{parts.username}:**@{host}")))
    return ";".join(redacted)
