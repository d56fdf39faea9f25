"""Reports settings: the beat heartbeat and how long a report scan may run."""

from functools import lru_cache

from pydantic import Field

from shared import Settings


class ReportsSettings(Settings):
    heartbeat_interval: float = Field(60.0, description="Seconds between beat heartbeats.")
    report_soft_time_limit: int = Field(
        120, description="Seconds a report scan runs before it saves progress and retries."
    )
    report_time_limit: int = Field(180, description="Hard limit of one report scan attempt.")
    report_scan_batch: int = Field(1000, description="Facts read per batch of a report scan.")
    report_scan_pause: float = Field(
        0.0, description="Seconds between scan batches, so a big report spares the database."
    )


@lru_cache
def get_settings() -> ReportsSettings:
    return ReportsSettings()
