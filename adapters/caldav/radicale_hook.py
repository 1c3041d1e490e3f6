"""Radicale hook plugin (`hook.type = "adapters.caldav.radicale_hook"`): every object a member
creates, changes or deletes queues a durable `view.sync` of its collection at once."""

from __future__ import annotations

from typing import Any

from radicale.hook import BaseHook, HookNotificationItemTypes

from adapters.caldav.embedded import embedded_of

_WRITES = frozenset(
    {HookNotificationItemTypes.UPSERT.value, HookNotificationItemTypes.DELETE.value}
)


class Hook(BaseHook):
    def __init__(self, configuration: Any) -> None:
        super().__init__(configuration)  # type: ignore[no-untyped-call]
        self._dav = embedded_of(configuration, "hook")

    @property
    def enabled(self) -> bool:
        return True

    def notify(self, notification_item: Any) -> None:
        # `point` is "<user>/<collection>"; `actor` the logged-in user (Radicale 3.9).
        if notification_item.type in _WRITES and notification_item.point:
            self._dav.member_wrote(
                notification_item.actor or "", notification_item.point, notification_item.type
            )
