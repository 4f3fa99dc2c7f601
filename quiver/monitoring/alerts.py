"""Alerts: one per ok <-> failing transition, logged, stored and posted to webhooks.

A check that keeps failing raises nothing more; the alert is raised again only
when it recovers (``resolved``) and fails anew (``firing``). Webhooks are
named in ``quiver.yaml``::

    monitoring:
      webhooks: [http://alerts.example.com/hook, {url: ..., headers: {Authorization: ...}}]

Posting happens on a background thread with retries and exponential backoff,
so a webhook that is down or slow never holds up a check run; ``close()``
waits a bounded time for deliveries still in flight.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from quiver.errors import ConfigError
from quiver.monitoring.results import FAILING, Transition

__all__ = ["Webhook", "WebhookNotifier", "make_alerts", "parse_webhooks"]

log = logging.getLogger("quiver.monitoring")


def make_alerts(project: str, transitions: Sequence[Transition]) -> list[dict[str, Any]]:
    """The JSON body of each alert (also what the registry stores)."""
    out = []
    for t in transitions:
        r = t.result
        state = "firing" if r.status == FAILING else "resolved"
        what = f"{r.view}:{r.feature}" if r.feature else r.view
        out.append({
            "project": project,
            "time": r.time.isoformat(),
            "state": state,
            "view": r.view,
            "feature": r.feature,
            "check": r.check,
            "value": r.to_dict()["value"],
            "threshold": r.to_dict()["threshold"],
            "previous": t.previous,
            "previous_since": t.since,
            "message": f"[{project}] {r.check} {state} on {what}: {r.detail}".rstrip(": "),
        })
    return out


@dataclass(frozen=True)
class Webhook:
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def parse_webhooks(monitoring: dict[str, Any]) -> list[Webhook]:
    """``monitoring.webhooks`` of ``quiver.yaml``: URLs, or mappings with ``url`` and ``headers``."""
    raw = monitoring.get("webhooks") or []
    if not isinstance(raw, list):
        raise ConfigError(f"quiver.yaml: monitoring.webhooks must be a list of URLs, got {raw!r}")
    hooks = []
    for item in raw:
        if isinstance(item, str):
            hooks.append(Webhook(item))
        elif isinstance(item, dict) and isinstance(item.get("url"), str):
            hooks.append(Webhook(item["url"], {str(k): str(v) for k, v in (item.get("headers") or {}).items()}))
        else:
            raise ConfigError(f"quiver.yaml: monitoring.webhooks entry {item!r} must be a URL or {{url: ..., headers: ...}}")
        if not hooks[-1].url.startswith(("http://", "https://")):
            raise ConfigError(f"quiver.yaml: webhook {hooks[-1].url!r} must be an http:// or https:// URL")
    return hooks


class WebhookNotifier:
    """Posts alerts to webhooks from one daemon thread, retrying with backoff.

    ``send`` only enqueues. Each delivery is tried up to ``attempts`` times,
    waiting ``backoff * 2**i`` seconds between tries (capped at
    ``max_backoff``); a delivery that still fails is logged and dropped (the
    alert itself is already in the registry).
    """

    def __init__(
        self,
        webhooks: Sequence[Webhook],
        *,
        attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 5.0,
        exit_timeout: float = 5.0,
    ) -> None:
        self.webhooks = list(webhooks)
        self.exit_timeout = exit_timeout
        self.attempts, self.backoff, self.max_backoff, self.timeout = attempts, backoff, max_backoff, timeout
        self._q: queue.Queue[tuple[Webhook, bytes, int, float] | None] = queue.Queue()
        self._pending = 0
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.delivered = 0
        self.failed = 0

    def send(self, alerts: Sequence[dict[str, Any]]) -> None:
        if not self.webhooks or not alerts:
            return
        self._closed = False
        for a in alerts:
            body = json.dumps(a, default=str).encode()
            for hook in self.webhooks:
                with self._cv:
                    self._pending += 1
                self._q.put((hook, body, 0, 0.0))
        self._start()

    def _start(self) -> None:
        if self._thread is None:
            import atexit

            atexit.register(self.close, self.exit_timeout)  # a CLI run still delivers, within a bounded time
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="quiver-webhooks", daemon=True)
            self._thread.start()

    def _post(self, hook: Webhook, body: bytes) -> None:
        req = urllib.request.Request(hook.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **hook.headers})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - URLs come from quiver.yaml
            resp.read()

    def _run(self) -> None:
        delayed: list[tuple[float, Webhook, bytes, int]] = []
        while True:
            now = time.monotonic()
            due = [d for d in delayed if d[0] <= now]
            delayed = [d for d in delayed if d[0] > now]
            for _, hook, body, attempt in due:
                self._q.put((hook, body, attempt, 0.0))
            wait = min((d[0] for d in delayed), default=now + 0.5) - now
            try:
                item = self._q.get(timeout=max(0.01, min(wait, 0.5)))
            except queue.Empty:
                if self._closed and not delayed:
                    return
                continue
            if item is None:
                if not delayed and self._q.empty():
                    return
                continue
            hook, body, attempt, _ = item
            try:
                self._post(hook, body)
                self.delivered += 1
                self._done()
            except (OSError, urllib.error.URLError) as e:
                if attempt + 1 >= self.attempts or self._closed:
                    self.failed += 1
                    log.warning("webhook %s: alert not delivered after %d tries (%s)", hook.url, attempt + 1, e)
                    self._done()
                else:
                    pause = min(self.max_backoff, self.backoff * 2**attempt)
                    delayed.append((time.monotonic() + pause, hook, body, attempt + 1))

    def _done(self) -> None:
        with self._cv:
            self._pending -= 1
            self._cv.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` seconds for deliveries in flight; True when none is left."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Flush (bounded), then stop the thread; undelivered alerts are logged."""
        if self._closed:
            return
        done = self.flush(timeout)
        self._closed = True
        self._q.put(None)
        if not done:
            log.warning("%d webhook deliveries still pending at close; they are dropped "
                        "(the alerts are in the registry: quiver monitor history)", self._pending)
