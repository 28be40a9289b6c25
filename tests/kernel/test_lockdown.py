"""The feature probe reports the lockdown mode read from securityfs and the
helper audit of the objects it would load (root: securityfs may need
mounting, the probe loads programs)."""

import json
import subprocess
import sys

from tests.kernel.conftest import require
from tracer import lockdown


def test_probe_json_shows_lockdown_and_audit():
    require("btf")
    p = subprocess.run([sys.executable, "-m", "tracer", "probe", "--json"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    mode = lockdown.read_mode()  # the probe mounted securityfs if it was not
    assert mode in lockdown.MODES
    assert res["lockdown"] == mode
    audit = res["helper_audit"]
    assert audit["forbidden_by_integrity_used"] == []
    assert audit["objects"]["sock"] and audit["objects"]["tls"]
    assert audit["forbidden_by_confidentiality_used"]["sock"] == ["bpf_probe_read_kernel"]
    d = res["decisions"]
    assert d["lockdown=integrity"] == "no helper forbidden by integrity is used"
    assert "sock.bpf.o calls bpf_probe_read_kernel" in d["lockdown=confidentiality"]
    if mode in ("integrity", "confidentiality"):
        # the kernel agrees with the table: a bpf_probe_write_user caller is refused
        assert res["features"]["probe_write_user"]["available"] is False
        assert d["bpf_probe_write_user"] == f"refused (lockdown={mode}): not used"


def test_probe_text_names_the_mode():
    require("btf")
    p = subprocess.run([sys.executable, "-m", "tracer", "probe"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].endswith(f"lockdown={lockdown.read_mode()}")
    assert "  lockdown=integrity: no helper forbidden by integrity is used" in p.stdout
