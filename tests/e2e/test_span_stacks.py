"""`tracer run --span-stacks`: each span carries the user stack of the thread
at request start, symbolised.

A C client built with frame pointers (tests/cprogs/span_client.c) sends 23
keep-alive requests, each from do_request(), to the Python test server: the 23
client spans' stacks hold do_request then main; the 23 server spans' stacks
start in the libc call that read the request. Without the flag no span has a
stack."""

import pytest

from tests.cprogs import build
from tests.e2e.tracing import TracerRun, free_port, held, py_server
from tests.kernel.conftest import require

N = 23


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    try:
        return build.build("fp", tmp_path_factory.mktemp("cprogs"), source="span_client.c")
    except build.BuildError as e:
        pytest.skip(str(e))


def _run(tmp_path, client, *flags):
    port = free_port()
    with py_server(port, 1) as srv, TracerRun(tmp_path, "--port", str(port), *flags) as tr:
        # the client's maps stay readable until the tracer has stopped
        with held([str(client), str(port), str(N), "hold"]):
            tr.stop()
    return tr, srv


def _symbols(span):
    return [f["symbol"] for f in span["stack"]]


@pytest.mark.timeout(120)
def test_span_stacks_23_client_and_server_spans(tmp_path, client):
    require("btf", "ringbuf", "tracepoint_syscalls")
    tr, srv = _run(tmp_path, client, "--span-stacks")
    assert tr.returncode == 0
    client_spans = [s for s in tr.spans if s["kind"] == "client"]
    server_spans = tr.by("server", srv.pid)
    assert len(client_spans) == len(server_spans) == N
    assert len({s["local_port"] for s in client_spans}) == 1  # one keep-alive connection
    for s in client_spans:
        syms = _symbols(s)
        assert "do_request" in syms and "main" in syms, s["stack"]
        assert syms.index("do_request") < syms.index("main")  # innermost first
        f = s["stack"][syms.index("do_request")]
        assert f["module"] == str(client) and int(f["addr"], 16) > 0 and f["offset"] > 0
        assert s["stack"][0]["module"].split("/")[-1].startswith("libc.so")
    for s in server_spans:
        assert s["stack"], s
        assert s["stack"][0]["module"].split("/")[-1].startswith("libc.so")
        assert s["stack"][0]["symbol"]
    # every request took one stack, from the one place it starts
    assert len({tuple(_symbols(s)) for s in client_spans}) == 1
    sm = tr.summary
    assert sm["spans_with_stack"] == 2 * N
    assert sm["span_stack_failed"] == sm["span_stacks_missing"] == 0
    assert sm["events_dropped"] == 0


@pytest.mark.timeout(120)
def test_no_stacks_without_the_flag(tmp_path, client):
    require("btf", "ringbuf", "tracepoint_syscalls")
    tr, srv = _run(tmp_path, client)
    assert len(tr.spans) == 2 * N
    assert not any("stack" in s for s in tr.spans)
    assert "spans_with_stack" not in tr.summary
