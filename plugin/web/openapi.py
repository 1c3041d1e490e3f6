"""The OpenAPI document of `/api/v1`, written by hand so it says exactly what the routes do.

`tests/integration/test_api.py` compares its paths with the routes that exist.
"""

from __future__ import annotations

from typing import Any

from plugin.web.schemas import HOST_ID_PATTERN, PathIdConvertor

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_AUTH_ERRORS = {"401": _PROBLEM, "404": _PROBLEM}


def _id_param(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{PathIdConvertor.regex}$"},
    }


def openapi_document(public_url: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "carecal API", "version": "1"},
        "servers": [{"url": f"{public_url}/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
            "/circles/{citizen_id}": {
                "get": {
                    "summary": "A citizen's circle: the citizen and the current members",
                    "parameters": [_id_param("citizen_id")],
                    "responses": {
                        "200": {
                            "description": "The circle",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Circle"}
                                }
                            },
                        },
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/tasks/{task_id}": {
                "get": {
                    "summary": "A task with its occurrences and who holds each",
                    "parameters": [_id_param("task_id")],
                    "responses": {
                        "200": {
                            "description": "The task",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Task"}
                                }
                            },
                        },
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/members/{member_id}/calendar-credentials": {
                "post": {
                    "summary": "Issue the member's app password for the embedded CalDAV server",
                    "description": (
                        "The password is shown once and replaces the one issued before, which "
                        "stops working. The member must be in a current circle of the tenant."
                    ),
                    "parameters": [_id_param("member_id")],
                    "responses": {
                        "201": {
                            "description": "The new credentials",
                            "headers": {
                                "Cache-Control": {"schema": {"type": "string", "const": "no-store"}}
                            },
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/CalendarCredentials"}
                                }
                            },
                        },
                        **_AUTH_ERRORS,
                        "409": _PROBLEM,
                    },
                }
            },
            "/relief-requests": {
                "post": {
                    "summary": "Ask relief for a member for a period",
                    "description": (
                        "The member's claims on occurrences in the period that have not "
                        "started are released (channel `api`, `task.released` to the host) "
                        "and offered to the others; nothing in the period is suggested to the "
                        "member while the request is requested or approved. "
                        "`relief.requested` goes to the host, which answers with "
                        "`relief.decided` (its visits go into the circle's calendars). `start` "
                        "and `end`: ISO 8601 date-times (without an offset: the citizen's time "
                        "zone) or dates (whole days; a date as `end` means through that day)."
                    ),
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "description": (
                                "The host's own name for this request (1-255 visible ASCII "
                                "characters): sent again, it answers 200 with the request "
                                "it made and asks nothing twice; with another body, 422."
                            ),
                            "schema": {"type": "string", "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ReliefRequestInput"}
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "The relief request, and what it released",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ReliefRequest"}
                                }
                            },
                        },
                        "200": {
                            "description": (
                                "The request this Idempotency-Key made before (`released` "
                                "empty: nothing was done again)"
                            ),
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ReliefRequest"}
                                }
                            },
                        },
                        "400": _PROBLEM,
                        "401": _PROBLEM,
                        "404": _PROBLEM,
                        "413": _PROBLEM,
                        "415": _PROBLEM,
                        "422": _PROBLEM,
                    },
                }
            },
            "/members/{member_id}/links/renew": {
                "post": {
                    "summary": "Revoke the member's personal links and issue new ones",
                    "description": (
                        "Every claim link, the ICS feed and the setup page of the member stop "
                        "working (410); their calendar copies are re-synced with new claim "
                        "links. The member must be in a current circle of the tenant."
                    ),
                    "parameters": [_id_param("member_id")],
                    "responses": {
                        "200": {
                            "description": "The new addresses",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/PersonalLinks"}
                                }
                            },
                        },
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/occurrences/{occurrence_id}/assign": {
                "post": {
                    "summary": "Assign an occurrence: bind a staff member, or ask anyone else",
                    "description": (
                        "A staff member is bound: a claim through channel `staff` (audited, "
                        "`task.claimed` to the host), shown as held in their calendar and as "
                        "`[Name] …` in the others'. A relative or someone from the network is "
                        "asked: a targeted offer that reads `[Til dig] …`/`[For you] …` in "
                        "their own calendar until they accept or decline it there or through "
                        "their claim link; nothing is claimed for them, and a member who passed "
                        "on it is not asked again (`declined`). Visits are assigned by the host "
                        "(`visit.assigned`)."
                    ),
                    "parameters": [_id_param("occurrence_id")],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/AssignRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Assigned, asked, or nothing to do (see `outcome`)",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Assignment"}
                                }
                            },
                        },
                        "400": _PROBLEM,
                        "401": _PROBLEM,
                        "404": {
                            "description": "No such occurrence, or a member in no circle of "
                            "the tenant (problem details)",
                            "content": {
                                "application/problem+json": {
                                    "schema": {"$ref": "#/components/schemas/Problem"}
                                }
                            },
                        },
                        "409": {
                            "description": "The occurrence is full, cancelled, over, or a "
                            "visit (`reason`: full, cancelled, over, visit)",
                            "content": {
                                "application/problem+json": {
                                    "schema": {"$ref": "#/components/schemas/Problem"}
                                }
                            },
                        },
                        "413": _PROBLEM,
                        "415": _PROBLEM,
                        "422": {
                            "description": "No valid `member_id`, or the member is not in "
                            "this occurrence's circle (`reason`: not_in_circle)",
                            "content": {
                                "application/problem+json": {
                                    "schema": {"$ref": "#/components/schemas/Problem"}
                                }
                            },
                        },
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
            "schemas": _SCHEMAS,
        },
    }


_NULLABLE_STRING = {"type": ["string", "null"]}

_SCHEMAS: dict[str, Any] = {
    "CalendarCredentials": {
        "type": "object",
        "required": ["caldav_url", "username", "password", "setup_url", "feed_url"],
        "properties": {
            "caldav_url": {
                "type": "string",
                "format": "uri",
                "description": "The member's calendar home on the embedded CalDAV server",
            },
            "username": {"type": "string"},
            "password": {"type": "string", "description": "Shown once; keep it in the app"},
            "setup_url": {
                "type": "string",
                "format": "uri",
                "description": (
                    "The member's personal setup page (/setup/{token}): an Apple profile, a "
                    "DAVx5 link and QR code, Thunderbird steps, the feed; revoked with their links"
                ),
            },
            "feed_url": {
                "type": "string",
                "format": "uri",
                "description": (
                    "The member's read-only ICS feed (/feeds/{token}.ics) for calendar apps "
                    "without CalDAV; stays the same until their links are revoked"
                ),
            },
        },
    },
    "AssignRequest": {
        "type": "object",
        "required": ["member_id"],
        "additionalProperties": False,
        "properties": {"member_id": {"type": "string", "pattern": HOST_ID_PATTERN}},
    },
    "Assignment": {
        "type": "object",
        "required": ["occurrence_id", "member_id", "outcome", "occurrence"],
        "properties": {
            "occurrence_id": {"type": "string"},
            "member_id": {"type": "string"},
            "outcome": {
                "enum": ["assigned", "already_held", "asked", "already_asked", "declined"],
                "description": (
                    "assigned: the staff member now holds it; asked: a targeted offer is in "
                    "the member's calendar; declined: the member had passed on it, not asked"
                ),
            },
            "occurrence": {"$ref": "#/components/schemas/Occurrence"},
        },
    },
    "ReliefRequestInput": {
        "type": "object",
        "required": ["citizen_id", "member_id", "start", "end"],
        "additionalProperties": False,
        "properties": {
            "citizen_id": {"type": "string"},
            "member_id": {"type": "string"},
            "start": {"type": "string", "description": "ISO 8601 date or date-time"},
            "end": {"type": "string", "description": "ISO 8601 date (inclusive) or date-time"},
        },
    },
    "ReliefRequest": {
        "type": "object",
        "required": ["id", "status", "citizen_id", "member_id", "start", "end", "released"],
        "properties": {
            "id": {"type": "string", "description": "`request_id` in relief.decided"},
            "status": {"enum": ["requested", "approved", "rejected"]},
            "citizen_id": {"type": "string"},
            "member_id": {"type": "string"},
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
            "released": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Occurrence ids whose claims by the member were released",
            },
        },
    },
    "PersonalLinks": {
        "type": "object",
        "required": ["feed_url", "setup_url"],
        "properties": {
            "feed_url": {"type": "string", "format": "uri"},
            "setup_url": {"type": "string", "format": "uri"},
        },
    },
    "Problem": {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "reason": {"type": "string", "description": "the case, for code to tell apart"},
            "errors": {
                "type": "array",
                "description": "each invalid field of a 422 (its location and what is wrong)",
                "items": {
                    "type": "object",
                    "properties": {
                        "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                        "msg": {"type": "string"},
                    },
                },
            },
            "max_bytes": {"type": "integer", "description": "the limit a 413 went over"},
        },
    },
    "Member": {
        "type": "object",
        "required": ["id", "name", "role", "visibility", "locale", "calendar"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "email": _NULLABLE_STRING,
            "role": {"enum": ["relative", "network", "staff"]},
            "visibility": {"enum": ["full", "limited"]},
            "locale": {"type": "string"},
            "calendar": {"enum": ["hosted", "external", "feed"]},
            "external": {
                "type": ["object", "null"],
                "properties": {"url": {"type": "string"}, "username": {"type": "string"}},
            },
            "capacity": {
                "type": "object",
                "properties": {
                    "hours_per_week": {"type": ["number", "null"]},
                    "tasks_per_week": {"type": ["integer", "null"]},
                },
            },
            "availability": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "weekday": {"type": "integer", "minimum": 1, "maximum": 7},
                        "start": {"type": "string"},
                        "end": {"type": "string"},
                    },
                },
            },
            "paused_until": {"type": ["string", "null"], "format": "date"},
        },
    },
    "Circle": {
        "type": "object",
        "required": ["citizen", "version", "members"],
        "properties": {
            "citizen": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "display_name": {"type": "string"},
                    "timezone": {"type": "string"},
                    "locale": {"type": "string"},
                },
            },
            "version": {"type": "integer"},
            "members": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}},
        },
    },
    "Claim": {
        "type": "object",
        "required": ["member_id", "channel", "at"],
        "properties": {
            "member_id": {"type": "string"},
            "channel": {"enum": ["caldav", "link", "api", "staff", "host"]},
            "at": {"type": "string", "format": "date-time"},
        },
    },
    "Occurrence": {
        "type": "object",
        "required": ["id", "start", "end", "status", "free_slots", "claims"],
        "properties": {
            "id": {"type": "string"},
            "start": {"type": "string", "format": "date-time", "description": "local, with offset"},
            "end": {"type": "string", "format": "date-time", "description": "local, with offset"},
            "status": {"enum": ["open", "partial", "filled", "cancelled"]},
            "free_slots": {"type": "integer", "minimum": 0},
            "claims": {"type": "array", "items": {"$ref": "#/components/schemas/Claim"}},
        },
    },
    "Task": {
        "type": "object",
        "required": ["id", "citizen_id", "version", "kind", "category", "status", "occurrences"],
        "properties": {
            "id": {"type": "string"},
            "citizen_id": {"type": "string"},
            "version": {"type": "integer"},
            "kind": {"enum": ["task", "visit", "relief"]},
            "category": {"type": "string"},
            "status": {"enum": ["active", "cancelled"]},
            "details": _NULLABLE_STRING,
            "location": _NULLABLE_STRING,
            "start": {"type": "string", "description": "local wall-clock time, no offset"},
            "end": {"type": "string", "description": "local wall-clock time, no offset"},
            "timezone": {"type": "string"},
            "people_needed": {"type": "integer"},
            "recurrence": _NULLABLE_STRING,
            "claim_deadline_hours": {"type": ["integer", "null"]},
            "assigned_member_id": _NULLABLE_STRING,
            "occurrences": {"type": "array", "items": {"$ref": "#/components/schemas/Occurrence"}},
        },
    },
}
