# Compiled form of tracer/stats.py (Cython pure-Python mode): the counters
# are fields of an extension type, so compiled callers that cimport it reach
# them without an attribute lookup; everyone else sees the same attributes.
# Every name in COUNTERS, in order (tests/unit/test_stats.py checks).

cdef class Stats:
    cdef public object events_seen, events_delivered, events_dropped, decode_errors
    cdef public object events_handled, connections_open, connections_total, connections_expired
    cdef public object h2_connections, h2_midstream, upgraded_connections, unparsed_bytes
    cdef public object unparsed_connections, malformed_messages, truncated_messages
    cdef public object framing_lost, incomplete_requests, unpaired_responses, h2_headers_lost
    cdef public object h2_framing_lost, h2_streams_reset, grpc_framing_lost, requests_overflow
    cdef public object correlation_ambiguous, correlation_unresolved, spans_injected
    cdef public object injected_conflicts, spans_filtered, spans_filtered_path
    cdef public object spans_filtered_method, spans_filtered_process, spans_filtered_exe
    cdef public object spans_filtered_cgroup, spans_sampled_out, spans_sampled_out_by_parent
    cdef public object config_reloads, config_reload_errors, spans_emitted
