"""A small client for the RabbitMQ management HTTP API (the operator's view of the broker)."""

from typing import Any
from urllib.parse import quote, urlsplit

import httpx


class ManagementError(RuntimeError):
    pass


class Management:
    """Talks to the first reachable management URL of a ';'-separated list."""

    def __init__(self, urls: str, timeout: float = 10.0) -> None:
        self.urls = [u.strip() for u in urls.split(";") if u.strip()]
        self.timeout = timeout

    def _client(self, url: str) -> httpx.Client:
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        auth = (parts.username or "guest", parts.password or "guest")
        return httpx.Client(base_url=base, auth=auth, timeout=self.timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        errors = []
        for url in self.urls:
            try:
                with self._client(url) as client:
                    response = client.request(method, "/api" + path, **kwargs)
            except httpx.TransportError as exc:
                errors.append(f"{url}: {exc}")
                continue
            if response.status_code >= 400:
                raise ManagementError(
                    f"{method} {path}: HTTP {response.status_code} {response.text[:300]}"
                )
            return response.json() if response.content else None
        raise ManagementError("management API unreachable: " + "; ".join(errors))

    @staticmethod
    def q(name: str) -> str:
        return quote(name, safe="")

    def put_vhost(self, vhost: str) -> None:
        self.request("PUT", f"/vhosts/{self.q(vhost)}")

    def delete_vhost(self, vhost: str) -> None:
        self.request("DELETE", f"/vhosts/{self.q(vhost)}")

    def grant(self, vhost: str, user: str, configure=".*", write=".*", read=".*") -> None:
        body = {"configure": configure, "write": write, "read": read}
        self.request("PUT", f"/permissions/{self.q(vhost)}/{self.q(user)}", json=body)

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        return self.request("GET", f"/queues/{self.q(vhost)}/{self.q(name)}")

    def queues(self, vhost: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/queues/{self.q(vhost)}")
