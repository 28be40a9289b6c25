"""CLI side of the exporters: strict URL errors (exit 2, one line), no heavy
imports on the JSONL path, OTEL_BSP_* settings."""

import subprocess
import sys

import pytest

from tracer.export.sinks import Exports, pipeline_options
from tracer.export.targets import parse_export


@pytest.mark.parametrize("args,needle", [
    (["--export", "http://h:4318"], "accepted forms: otlp-grpc://"),
    (["--export", "otlp-grpc://h:99999"], "bad port"),
    (["--metrics", "9464"], "HOST:PORT"),
    (["--service-name", "python"], "COMM=NAME"),
])
def test_bad_export_arguments_exit_2_one_line(args, needle):
    p = subprocess.run([sys.executable, "-m", "tracer", "run", *args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("tracer: ")
    assert needle in p.stderr
    assert "Traceback" not in p.stderr


def test_jsonl_path_imports_no_exporter_library():
    code = (
        "import sys\n"
        "from tracer import cli\n"
        "args = cli.build_parser().parse_args(['run', '--port', '80'])\n"
        "cli._check_args(args)\n"
        "from tracer.export.sinks import Exports\n"
        "e = Exports(args.export_targets, args.metrics_addr, args.service_names)\n"
        "w = object()\n"
        "assert e.sink(w) is w\n"
        "heavy = [m for m in ('grpc', 'google.protobuf', 'prometheus_client',\n"
        "         'opentelemetry') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_bsp_environment():
    assert pipeline_options({}) == {}
    assert pipeline_options({"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_SCHEDULE_DELAY": "250",
                             "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
                             "OTEL_BSP_EXPORT_TIMEOUT": "3000"}) == \
        {"queue_size": 100, "interval_s": 0.25, "batch_size": 10, "max_retry_s": 3.0}
    with pytest.raises(ValueError, match="OTEL_BSP_MAX_QUEUE_SIZE"):
        pipeline_options({"OTEL_BSP_MAX_QUEUE_SIZE": "-1"})


def test_fanout_feeds_writer_then_every_exporter(tmp_path):
    e = Exports([parse_export(f"jaeger-json:{tmp_path / 'a.json'}"),
                 parse_export(f"jaeger-json:{tmp_path / 'b.json'}")])
    seen = []
    sink = e.sink(seen.append)
    for i in range(3):
        sink(i)
    assert seen == [0, 1, 2]
    assert [p.submitted for p in e.pipelines] == [3, 3]
    e.pipelines.clear()  # ints are not spans: do not export them
    assert e.summary() == {}


def test_unwritable_jaeger_file_is_oserror(tmp_path):
    with pytest.raises(OSError):
        Exports([parse_export(f"jaeger-json:{tmp_path}/missing/dir/t.json")])
