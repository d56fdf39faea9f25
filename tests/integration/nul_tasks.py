"""Loaded into a test's reports worker (``-I``): tasks whose failure or result carries a NUL
character, which PostgreSQL refuses in a text column (``test_refused_rows.py``)."""

from services.reports.service import service


@service.task
def fail_with_nul(text: str) -> None:
    raise ValueError(f"refused\x00{text}")


@service.task
def return_nul(text: str) -> str:
    return f"kept\x00{text}"
