"""Whether the host a download would go to answers, decided within a bounded time.

TFDS's downloader retries a failed connection with exponential back-off for about 200 s before giving up, so
dlfund asks this module first and fails at once when the answer is no. Tests replace :func:`reachable`
(``monkeypatch.setattr(dlfund.data.network, "reachable", lambda url, timeout=2.0: False)``) to simulate an
offline machine; the preparation code looks the function up on this module at call time for that reason.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request

PROBE_TIMEOUT = 2.0
"""Seconds to wait for a TCP connection before calling the host unreachable."""


def reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the server of ``url`` opens within ``timeout`` seconds.

    When a proxy is configured for the URL's scheme (``HTTPS_PROXY`` and friends, as ``requests`` reads them),
    the proxy is what a download connects to, so the proxy is probed instead.
    """
    host, port = endpoint(url)
    outcome: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:  # DNS failure, refused, unreachable network, timed out
            outcome.append(False)

    # The name lookup inside create_connection ignores `timeout` (a stalled resolver can block for 20 s or
    # more), so the attempt runs in a daemon thread and is abandoned when the time is up.
    worker = threading.Thread(target=connect, name=f"dlfund-probe-{host}", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(outcome and outcome[0])


def endpoint(url: str) -> tuple[str, int]:
    """``(host, port)`` that a download of ``url`` connects to first: the proxy if one applies, else the server."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and parts.hostname and not urllib.request.proxy_bypass(parts.hostname):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxy_parts.hostname or "", proxy_parts.port or (443 if proxy_parts.scheme == "https" else 80)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
