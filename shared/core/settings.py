"""Configuration, read once from the environment; nothing else reads ``os.environ``."""

from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
