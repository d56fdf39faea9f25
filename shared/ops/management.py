"""A small client for the RabbitMQ management HTTP API (the operator's view of the broker)."""

from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from shared.core.settings import redact


class ManagementError(RuntimeError):
    """The management API refused or could not be reached; the message says which."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Management:
    """Talks to the first reachable management URL of a ';'-separated list."""

    def __init__(self, urls: str, timeout: float = 10.0) -> None:
        self.urls = [u.strip() for u in urls.split(";") if u.strip()]
        self.timeout = timeout

    def _client(self, url: str) -> httpx.Client:
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        # Percent-decoded: a password with '@' or ':' is written %40 / %3A in a URL.
        auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
        return httpx.Client(base_url=base, auth=auth, timeout=self.timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        errors = []
        for url in self.urls:
            try:
                with self._client(url) as client:
                    response = client.request(method, "/api" + path, **kwargs)
            except httpx.TransportError as exc:
                errors.append(f"{redact(url)}: {exc}")
                continue
            if response.status_code in (401, 403):
                raise ManagementError(
                    f"{method} {path}: permission denied for user"
                    f" {unquote(urlsplit(url).username or 'guest')!r}"
                    " (needs the 'administrator' tag for users, permissions and definitions)",
                    response.status_code,
                )
            if response.status_code >= 400:
                raise ManagementError(
                    f"{method} {path}: HTTP {response.status_code} {response.text[:300]}",
                    response.status_code,
                )
            return response.json() if response.content else None
        raise ManagementError("management API unreachable: " + "; ".join(errors))

    @staticmethod
    def q(name: str) -> str:
        return quote(name, safe="")

    def put_vhost(self, vhost: str, description: str = "") -> None:
        body = {"description": description} if description else None
        self.request("PUT", f"/vhosts/{self.q(vhost)}", json=body)

    def vhosts(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.request("GET", "/vhosts")
        return answer

    def delete_vhost(self, vhost: str) -> None:
        self.request("DELETE", f"/vhosts/{self.q(vhost)}")

    def grant(
        self, vhost: str, user: str, configure: str = ".*", write: str = ".*", read: str = ".*"
    ) -> None:
        body = {"configure": configure, "write": write, "read": read}
        self.request("PUT", f"/permissions/{self.q(vhost)}/{self.q(user)}", json=body)

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", f"/queues/{self.q(vhost)}/{self.q(name)}")
        return answer

    def queues(self, vhost: str) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.request("GET", f"/queues/{self.q(vhost)}")
        return answer

    def connections(self, vhost: str) -> list[dict[str, Any]]:
        """The AMQP connections open on ``vhost`` (user, peer, client-given name)."""
        answer: list[dict[str, Any]] = self.request("GET", f"/vhosts/{self.q(vhost)}/connections")
        return answer

    def collection(self, kind: str, vhost: str) -> list[dict[str, Any]]:
        """``kind`` is a management collection: queues, exchanges, bindings, policies, ..."""
        answer: list[dict[str, Any]] = self.request("GET", f"/{kind}/{self.q(vhost)}")
        return answer

    def put_user(self, user: str, password: str, tags: str = "") -> None:
        self.request("PUT", f"/users/{self.q(user)}", json={"password": password, "tags": tags})

    def delete_user(self, user: str) -> None:
        self.request("DELETE", f"/users/{self.q(user)}")

    def user(self, user: str) -> dict[str, Any] | None:
        answer: dict[str, Any] | None = self._maybe("GET", f"/users/{self.q(user)}")
        return answer

    def permissions(self, vhost: str, user: str) -> dict[str, Any] | None:
        answer: dict[str, Any] | None = self._maybe(
            "GET", f"/permissions/{self.q(vhost)}/{self.q(user)}"
        )
        return answer

    def topic_permissions(self, vhost: str, user: str) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = (
            self._maybe("GET", f"/topic-permissions/{self.q(vhost)}/{self.q(user)}") or []
        )
        return answer

    def grant_topic(self, vhost: str, user: str, exchange: str, write: str, read: str) -> None:
        body = {"exchange": exchange, "write": write, "read": read}
        self.request("PUT", f"/topic-permissions/{self.q(vhost)}/{self.q(user)}", json=body)

    def definitions(self, vhost: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", f"/definitions/{self.q(vhost)}")
        return answer

    def import_definitions(self, definitions: dict[str, Any], vhost: str | None = None) -> None:
        """Into the vhosts the file names (users too), or only the topology into ``vhost``."""
        path = "/definitions" + (f"/{self.q(vhost)}" if vhost else "")
        self.request("POST", path, json=definitions)

    def _maybe(self, method: str, path: str) -> Any:
        """The resource, or None when the broker says it does not exist."""
        try:
            return self.request(method, path)
        except ManagementError as exc:
            if exc.status == 404:
                return None
            raise
