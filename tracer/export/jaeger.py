"""`--export jaeger-json:FILE`: Jaeger's JSON trace format (what the query API's
/api/traces returns and the Jaeger UI's "JSON File" upload loads):

    {"data": [{"traceID": ..., "spans": [...], "processes": {"p1": {...}}, "warnings": null}],
     "total": 0, "limit": 0, "offset": 0, "errors": null}

For captures: spans are kept in memory (each serialised once, grouped by
trace) up to `max_spans`, rewritten atomically every `write_every_s` while they
change and at exit. Beyond the cap spans are rejected (counted as export
failures). For continuous tracing into Jaeger, use OTLP: Jaeger takes it natively.
"""

from __future__ import annotations

import json
import os
import time

from . import semconv

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _tag(key: str, value) -> dict:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    return {"key": key, "type": "string", "value": str(value)}


class JaegerJsonExporter:
    def __init__(self, path: str, resources: semconv.Resources | None = None,
                 max_spans: int = 20000, write_every_s: float = 10.0) -> None:
        self.path = path
        self.name = f"jaeger-json:{path}"
        self.resources = resources or semconv.Resources()
        self.route = semconv.RouteCache()
        self.max_spans = max_spans
        self.write_every_s = write_every_s
        self.count = 0
        self._traces: dict[str, list[str]] = {}  # trace id -> serialised spans
        self._trace_procs: dict[str, set[str]] = {}  # trace id -> process keys
        self._procs: dict[tuple[int, str], str] = {}  # (pid, comm) -> "p<n>"
        self._proc_json: dict[str, str] = {}
        self._dirty = False
        self._last_write = time.monotonic()
        # fail at start, not at exit, if the file cannot be written
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.render())

    def _process(self, span) -> str:
        key = (span.pid, span.comm)
        pkey = self._procs.get(key)
        if pkey is None:
            pkey = self._procs[key] = f"p{len(self._procs) + 1}"
            res = dict(self.resources.of(span.pid, span.comm))
            service = res.pop("service.name")
            self._proc_json[pkey] = _dumps({"serviceName": service,
                                            "tags": [_tag(k, v) for k, v in res.items()]})
        return pkey

    def span_json(self, span, pkey: str) -> str:
        attrs = span.attributes()
        tags = [_tag("span.kind", span.kind)]
        tags += [_tag(k, v) for k, v in attrs.items()]
        tags += [_tag(k, v) for k, v in semconv.extra_attributes(span).items()]
        if semconv.is_error(span, attrs):
            tags += [_tag("error", True), _tag("otel.status_code", "ERROR"),
                     _tag("error.type", semconv.error_type(span, attrs))]
        refs = []
        if span.parent_span_id:
            refs.append({"refType": "CHILD_OF", "traceID": span.trace_id,
                         "spanID": span.parent_span_id})
        return _dumps({
            "traceID": span.trace_id, "spanID": span.span_id,
            "operationName": semconv.span_name(span, self.route),
            "references": refs, "flags": 1,
            "startTime": span.start_time_unix_nano // 1000,  # microseconds
            "duration": span.duration_ns // 1000,
            "tags": tags, "logs": [], "processID": pkey, "warnings": None,
        })

    def export(self, spans: list) -> int:
        room = self.max_spans - self.count
        rejected = max(len(spans) - room, 0)
        for span in spans[:max(room, 0)]:
            pkey = self._process(span)
            self._traces.setdefault(span.trace_id, []).append(self.span_json(span, pkey))
            self._trace_procs.setdefault(span.trace_id, set()).add(pkey)
        self.count += len(spans) - rejected
        if len(spans) > rejected:
            self._dirty = True
        if self._dirty and time.monotonic() - self._last_write >= self.write_every_s:
            self.write()
        return rejected

    def render(self) -> str:
        parts = []
        for tid, spans in self._traces.items():
            procs = ",".join(f'"{p}":{self._proc_json[p]}'
                             for p in sorted(self._trace_procs[tid]))
            parts.append(f'{{"traceID":"{tid}","spans":[{",".join(spans)}],'
                         f'"processes":{{{procs}}},"warnings":null}}')
        return ('{"data":[' + ",".join(parts) +
                '],"total":0,"limit":0,"offset":0,"errors":null}\n')

    def write(self) -> None:
        """Atomic rewrite: a reader never sees half a file."""
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.render())
        os.replace(tmp, self.path)
        self._dirty = False
        self._last_write = time.monotonic()

    def close(self) -> None:
        self.write()
