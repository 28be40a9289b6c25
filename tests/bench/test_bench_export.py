"""Export cost, agent CPU and peak RSS with each exporter on vs off (see export_cost.py)."""

from tests.bench import export_cost
from tests.kernel.conftest import require


def test_export_cost_2000_exchanges():
    require("btf", "ringbuf", "tracepoint_syscalls")
    table = export_cost.main(n=2000, repeat=1)
    for mode, row in table.items():
        print(f"{mode:12s} {row}")
        assert row["spans"] >= 3999
        assert row["spans_not_exported"] == 0, mode
