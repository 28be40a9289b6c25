"""Jaeger JSON: grouping by trace, processes, references, tags, the cap."""

import json

from tests.unit.export_spans import make_span
from tracer.export import semconv
from tracer.export.jaeger import JaegerJsonExporter

TID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_structure_grouping_and_tags(tmp_path):
    out = tmp_path / "t.json"
    exp = JaegerJsonExporter(str(out), semconv.Resources(host="h"))
    assert json.loads(out.read_text())["data"] == []  # created at start
    parent = make_span(trace_id=TID, span_id="00000000000000aa", kind="client", pid=1,
                       comm="curl", status=500)
    child = make_span(trace_id=TID, span_id="00000000000000bb", parent_span_id="00000000000000aa",
                      pid=2, comm="python3", path="/item/5")
    other = make_span(pid=2, comm="python3")
    assert exp.export([parent, child, other]) == 0
    exp.close()
    doc = json.loads(out.read_text())
    assert set(doc) == {"data", "total", "limit", "offset", "errors"}
    assert len(doc["data"]) == 2
    t = doc["data"][0]
    assert t["traceID"] == TID
    assert [s["spanID"] for s in t["spans"]] == ["00000000000000aa", "00000000000000bb"]
    procs = t["processes"]
    assert {p["serviceName"] for p in procs.values()} == {"curl", "python3"}
    for s in t["spans"]:
        assert s["processID"] in procs
        assert s["traceID"] == TID
    p, c = t["spans"]
    assert p["references"] == []
    assert c["references"] == [{"refType": "CHILD_OF", "traceID": TID,
                                "spanID": "00000000000000aa"}]
    assert c["operationName"] == "GET /item/{id}"
    assert c["startTime"] == child.start_time_unix_nano // 1000
    assert c["duration"] == 25_000
    tags = {x["key"]: x for x in p["tags"]}
    assert tags["span.kind"]["value"] == "client"
    assert tags["error"] == {"key": "error", "type": "bool", "value": True}
    assert tags["http.response.status_code"] == {"key": "http.response.status_code",
                                                 "type": "int64", "value": 500}
    ptags = {x["key"]: x["value"] for x in procs[p["processID"]]["tags"]}
    assert ptags["process.pid"] == 1 and ptags["host.name"] == "h"
    assert "error" not in {x["key"] for x in c["tags"]}


def test_cap_rejects_and_counts(tmp_path):
    exp = JaegerJsonExporter(str(tmp_path / "t.json"), max_spans=5)
    assert exp.export([make_span() for _ in range(3)]) == 0
    assert exp.export([make_span() for _ in range(4)]) == 2
    assert exp.export([make_span()]) == 1
    exp.close()
    doc = json.loads((tmp_path / "t.json").read_text())
    assert sum(len(t["spans"]) for t in doc["data"]) == 5


def test_periodic_rewrite(tmp_path):
    out = tmp_path / "t.json"
    exp = JaegerJsonExporter(str(out), write_every_s=0)
    exp.export([make_span()])
    assert len(json.loads(out.read_text())["data"]) == 1
    assert not (tmp_path / "t.json.tmp").exists()
