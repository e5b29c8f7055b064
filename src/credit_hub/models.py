"""Every domain's ORM models, imported in one place for Alembic and mapper configuration."""

from credit_hub.access.models import ApiKey, Client
from credit_hub.audit.models import AuditEvent
from credit_hub.changes.models import ChangeEvent, Delivery, Subscription, Watch
from credit_hub.db import Base
from credit_hub.ingest.models import Submission
from credit_hub.objections.models import Objection, Repair
from credit_hub.records.models import Record, RecordVersion
from credit_hub.selfservice.models import AccessCode, SubjectSession
from credit_hub.subjects.models import Subject, SubjectName

__all__ = [
    "AccessCode",
    "ApiKey",
    "AuditEvent",
    "Base",
    "ChangeEvent",
    "Client",
    "Delivery",
    "Objection",
    "Record",
    "RecordVersion",
    "Repair",
    "Subject",
    "SubjectName",
    "SubjectSession",
    "Submission",
    "Subscription",
    "Watch",
]
