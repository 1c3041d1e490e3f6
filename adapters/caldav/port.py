"""The calendar port lives with the services that use it (`plugin.services.calendar_port`);
this module keeps the adapter-side name that the client and the tests import from."""

from plugin.services.calendar_port import (
    AlreadyExists,
    Body,
    CalendarClient,
    CalendarError,
    CalendarUnavailable,
    Delta,
    EtagMismatch,
    Forbidden,
    InvalidSyncToken,
    NotFound,
    Probe,
    canonical_href,
    collection_path,
    object_href,
)

__all__ = [
    "AlreadyExists",
    "Body",
    "CalendarClient",
    "CalendarError",
    "CalendarUnavailable",
    "Delta",
    "EtagMismatch",
    "Forbidden",
    "InvalidSyncToken",
    "NotFound",
    "Probe",
    "canonical_href",
    "collection_path",
    "object_href",
]
