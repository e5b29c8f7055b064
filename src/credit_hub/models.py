"""Every domain's ORM models, imported in one place for Alembic and mapper configuration."""

from credit_hub.access.models import ApiKey, Client
from credit_hub.audit.models import AuditEvent
from credit_hub.db import Base
from credit_hub.ingest.models import Submission
from credit_hub.records.models import Record, RecordVersion
from credit_hub.subjects.models import Subject, SubjectName

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Base",
    "Client",
    "Record",
    "RecordVersion",
    "Subject",
    "SubjectName",
    "Submission",
]
