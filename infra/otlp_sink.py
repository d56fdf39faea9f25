"""A real OTLP/HTTP trace receiver on loopback that keeps the spans it is sent, so tests,
the demo and the benchmark can read traces back. Never a mock: every service exports to
it with the SDK's own OTLP exporter (``OTEL_EXPORTER_OTLP_ENDPOINT=<sink.url>``), exactly
as to an OpenTelemetry Collector or Jaeger.

``python -m infra.otlp_sink --port 4318`` runs one in the foreground and prints each trace
as a tree once it has been quiet for a moment.
"""

import argparse
import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from infra.loopback import LoopbackHttpServer


@dataclass
class Span:
    """One received span, its ids as hex as a trace backend shows them."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 0

    @property
    def event_names(self) -> list[str]:
        return [name for name, _ in self.events]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def decode(body: bytes) -> list[Span]:
    """The spans of one OTLP/HTTP protobuf export request."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(
                    Span(
                        service=service,
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(),
                        kind=s.kind,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attributes=_attributes(s.attributes),
                        events=[(e.name, _attributes(e.attributes)) for e in s.events],
                        status=s.status.code,
                    )
                )
    return spans


def render(spans: list[Span]) -> str:
    """One trace as an indented tree, children under their parent by start time: the
    service, the span, its duration, its events and the task id it names."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[Span]] = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        children.setdefault(span.parent_id if span.parent_id in ids else "", []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            ms = (span.end_ns - span.start_ns) / 1e6
            task = span.attributes.get("eventful.task_id", "")
            events = "".join(f" [{name}]" for name in span.event_names)
            label = "  " * depth + span.name + events
            lines.append(f"{span.service:<9} {label:<64} {ms:>8.1f} ms  {task}".rstrip())
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


class OtlpSink(LoopbackHttpServer):
    """``POST /v1/traces`` (protobuf, optionally gzip) answered 200; the spans are kept."""

    def __init__(self, port: int | None = None, keep: bool = True) -> None:
        self.spans: list[Span] = []
        self.received = 0  # spans, kept or not
        self.keep = keep  # False: count only (a benchmark's sink)
        self._lock = threading.Lock()
        super().__init__(port)

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                spans = decode(body)
                with sink._lock:
                    sink.received += len(spans)
                    if sink.keep:
                        sink.spans.extend(spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--quiet", type=float, default=2.0, help="seconds without a new span"
                        " of a trace before it is printed")  # fmt: skip
    args = parser.parse_args()
    sink = OtlpSink(args.port).start()
    print(f"OTLP/HTTP sink on {sink.url}/v1/traces", flush=True)
    printed: set[str] = set()
    while True:
        time.sleep(0.5)
        now = time.time_ns()
        with sink._lock:
            traces: dict[str, list[Span]] = {}
            for span in sink.spans:
                traces.setdefault(span.trace_id, []).append(span)
        for trace_id, spans in traces.items():
            last = max(s.end_ns for s in spans)
            if trace_id not in printed and now - last > args.quiet * 1e9:
                printed.add(trace_id)
                print(f"trace {trace_id}\n{render(spans)}\n", flush=True)


if __name__ == "__main__":
    main()
