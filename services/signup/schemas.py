"""What the signup API accepts and answers: the HTTP contract, free of any I/O."""

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field


class SignupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    email: EmailStr
    name: str = Field(min_length=1, max_length=200)
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
