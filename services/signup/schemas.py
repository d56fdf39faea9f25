"""What the signup API accepts and answers: the HTTP contract, free of any I/O."""

import unicodedata
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field

REFUSED_CATEGORIES = {"Cc": "a control character", "Cs": "a lone surrogate"}
NO_CONTROL_CHARACTERS = r"^[^\u0000-\u001f\u007f-\u009f]*$"  # the rule, for the OpenAPI document


def _printable(value: str) -> str:
    """Refuse what PostgreSQL cannot store (NUL, lone surrogates) and what no name or
    address contains (control characters: escapes, newlines); the position, not the text."""
    for position, char in enumerate(value):
        if (category := unicodedata.category(char)) in REFUSED_CATEGORIES:
            raise ValueError(f"{REFUSED_CATEGORIES[category]} at position {position}")
    return value


class SignupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    email: Annotated[EmailStr, AfterValidator(_printable)] = Field(
        description="Unique regardless of case: Ada@example.com and ada@example.com are one"
        " user. Special-use domains (.test, .localhost, ...) are refused."
    )
    name: Annotated[str, AfterValidator(_printable)] = Field(
        min_length=1, max_length=200, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS}
    )
    phone: str = Field(pattern=r"^\+?[0-9]{6,16}$", description="Receives the verification code.")


class User(BaseModel):
    id: UUID
    email: str
    name: str
    phone: str | None
    created_at: datetime


class TaskStatus(BaseModel):
    task_id: str
    status: str
    ready: bool
    result: Any = None
    traceback: str | None = None


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = Field(
        None, description="For 422: each invalid field, without the value that was sent."
    )
