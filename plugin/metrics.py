"""Prometheus metrics, one registry per app (no process-global state)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from plugin.services.ports import InboxStatus, JobStatus, OutboxStatus


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.webhooks_accepted = Counter(
            "carecal_webhooks_accepted_total",
            "Host webhooks accepted, by tenant, event type and outcome",
            ["tenant", "type", "outcome"],
            registry=self.registry,
        )
        self.webhooks_rejected = Counter(
            "carecal_webhooks_rejected_total",
            "Host webhooks rejected, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.webhooks_applied = Counter(
            "carecal_webhooks_applied_total",
            "Inbox entries applied, by event type and outcome (applied, stale, failed)",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.inbox = Gauge(
            "carecal_inbox",
            "Inbox entries by status",
            ["status"],
            registry=self.registry,
        )
        self.jobs = Gauge(
            "carecal_jobs",
            "Background jobs by status",
            ["status"],
            registry=self.registry,
        )
        self.jobs_processed = Counter(
            "carecal_jobs_processed_total",
            "Background jobs processed by this process, by kind and result",
            ["kind", "result"],
            registry=self.registry,
        )
        self.poll_views = Counter(
            "carecal_calendar_poll_views_total",
            "Members' calendars looked at by the poll, by what it found: due (a sync queued),"
            " idle, down (its sync waits for a retry, its server still does not answer),"
            " unanswered (no answer within the poll's interval)",
            ["result"],
            registry=self.registry,
        )
        self.horizon_refreshes = Counter(
            "carecal_horizon_refreshes_total",
            "Rounds of extending recurring tasks to the horizon",
            registry=self.registry,
        )
        self.outbox_delivered = Counter(
            "carecal_outbox_delivered_total",
            "Events delivered to the host (a 2xx answer), by tenant and type",
            ["tenant", "type"],
            registry=self.registry,
        )
        self.outbox_failed = Counter(
            "carecal_outbox_failed_total",
            "Failed attempts to deliver an event, by tenant and reason (unreachable, rejected)",
            ["tenant", "reason"],
            registry=self.registry,
        )
        self.outbox_dead = Counter(
            "carecal_outbox_dead_total",
            "Events given up on (dead letters), by tenant and reason (expired, no_url)",
            ["tenant", "reason"],
            registry=self.registry,
        )
        self.outbox = Gauge(
            "carecal_outbox",
            "Undelivered events by status (pending: still being tried; dead: given up)",
            ["status"],
            registry=self.registry,
        )
        self.escalations = Counter(
            "carecal_escalations_total",
            "task.unfilled events queued for occurrences with free slots at their deadline",
            registry=self.registry,
        )
        self._accepted: dict[tuple[str, str, str], Counter] = {}
        self.request_seconds = Histogram(
            "carecal_webhook_seconds",
            "Time to accept a host webhook (verified, validated and durably recorded)",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )

    def count_accepted(self, tenant: str, event_type: str, result: str) -> None:
        # labels() hashes and locks on every call; the few label sets are bound once.
        key = (tenant, event_type, result)
        child = self._accepted.get(key)
        if child is None:
            child = self._accepted[key] = self.webhooks_accepted.labels(*key)
        child.inc()

    def set_job_counts(self, counts: Mapping[JobStatus, int]) -> None:
        for status in ("queued", "running", "done", "failed"):
            self.jobs.labels(status).set(counts.get(status, 0))

    def set_inbox_counts(self, counts: Mapping[InboxStatus, int]) -> None:
        for status in ("pending", "applied", "stale", "failed"):
            self.inbox.labels(status).set(counts.get(status, 0))

    def set_outbox_counts(self, counts: Mapping[OutboxStatus, int]) -> None:
        for status in ("pending", "dead"):
            self.outbox.labels(status).set(counts.get(status, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
