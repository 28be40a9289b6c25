"""Scoring: the tracer's spans against the servers' ground truth, and latency
percentiles from the load generator's raw times. Pure functions over plain data.

Matching key: (x-request-id, service, kind). The service of a span comes from
its ``netns`` inode (each service runs in its own namespace); the request id
from the span attribute ``http.request.header.x-request-id`` (or any attribute
ending in ``x-request-id``, e.g. gRPC metadata).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def latency_percentiles(latencies_us: Sequence[float]) -> dict[str, float]:
    if len(latencies_us) == 0:
        return {f"latency_{k}_us": math.nan for k in PERCENTILES}
    arr = np.asarray(latencies_us, dtype=float)
    return {f"latency_{k}_us": float(np.percentile(arr, q)) for k, q in PERCENTILES.items()}


def span_request_id(span: Mapping) -> str | None:
    attrs = span.get("attributes") or {}
    rid = attrs.get("http.request.header.x-request-id")
    if rid is None:
        for k, v in attrs.items():
            if k.lower().endswith("x-request-id"):
                rid = v
                break
    if isinstance(rid, list):  # OTel header attributes may be arrays
        rid = rid[0] if rid else None
    return rid


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def score_spans(
    ground_truth: Iterable[Mapping],
    spans: Iterable[Mapping],
    *,
    tag: str,
    netns_services: Mapping[int, str],
    chain: Sequence,  # of scenarios.Expected (service, kind, parent)
    load_context: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, float]:
    """Detection and correlation figures for one traced run.

    ``tag``: only ground truth whose request id starts with ``tag-`` is expected.
    ``load_context``: request id -> (trace_id, span_id) the load generator sent.
    """
    prefix = f"{tag}-"
    wanted = {(e.service, e.kind) for e in chain}
    parents = {(e.service, e.kind): e.parent for e in chain}
    entry = (chain[0].service, chain[0].kind) if chain else None

    expected: dict[tuple, Mapping] = {}
    for rec in ground_truth:
        rid = rec.get("request_id")
        if not rid or not rid.startswith(prefix):
            continue
        sk = (rec.get("service"), rec.get("kind"))
        if sk in wanted:
            expected[(rid, *sk)] = rec
    gt_requests = len({k[0] for k in expected if (k[1], k[2]) == entry})

    matched: dict[tuple, Mapping] = {}
    unmatched = duplicates = total = 0
    for span in spans:
        service = netns_services.get(span.get("netns"))
        if service is None:
            continue  # outside the namespaces under test
        total += 1
        key = (span_request_id(span), service, span.get("kind"))
        if key in expected and key not in matched:
            matched[key] = span
        elif key in matched:
            duplicates += 1
        else:
            unmatched += 1

    ok_method = ok_path = ok_status = ok_all = 0
    lat_err = []
    for key, span in matched.items():
        rec = expected[key]
        m = span.get("method") == rec.get("method")
        p = span.get("path") == rec.get("path")
        s = span.get("status") == rec.get("status")
        ok_method += m
        ok_path += p
        ok_status += s
        ok_all += m and p and s
        dur = span.get("duration_ns")
        if isinstance(dur, int | float) and rec.get("end_unix_ns") and rec.get("start_unix_ns"):
            lat_err.append((dur - (rec["end_unix_ns"] - rec["start_unix_ns"])) / 1000.0)

    correct = 0
    load_context = load_context or {}
    for (rid, service, kind), span in matched.items():
        ctx = load_context.get(rid)
        if ctx is None:
            continue
        parent = parents[(service, kind)]
        if parent == "load":
            want_parent = ctx[1]
        else:
            parent_span = matched.get((rid, *parent))
            want_parent = parent_span.get("span_id") if parent_span else None
        if want_parent and span.get("trace_id") == ctx[0] and \
                span.get("parent_span_id") == want_parent:
            correct += 1

    n = len(matched)
    abs_err = np.abs(np.asarray(lat_err)) if lat_err else None
    return {
        "gt_requests": gt_requests,
        "gt_records": len(expected),
        "spans_total": total,
        "spans_matched": n,
        "spans_unmatched": unmatched,
        "spans_duplicate": duplicates,
        "precision": _ratio(n, n + unmatched + duplicates),
        "recall": _ratio(n, len(expected)),
        "method_accuracy": _ratio(ok_method, n),
        "path_accuracy": _ratio(ok_path, n),
        "status_accuracy": _ratio(ok_status, n),
        "field_accuracy": _ratio(ok_all, n),
        "latency_error_p50_us": float(np.median(abs_err)) if abs_err is not None else math.nan,
        "latency_error_p99_us": float(np.percentile(abs_err, 99)) if abs_err is not None
        else math.nan,
        "latency_bias_us": float(np.median(lat_err)) if lat_err else math.nan,
        "correlation": _ratio(correct, n),
    }


def count_ground_truth(ground_truth: Iterable[Mapping], tag: str, entry: tuple[str, str]) -> int:
    """Distinct requests (by id) the entry service handled in run ``tag``."""
    prefix = f"{tag}-"
    return len({r["request_id"] for r in ground_truth
                if (r.get("request_id") or "").startswith(prefix)
                and (r.get("service"), r.get("kind")) == entry})
