"""The saturation scenario for real, short (1 group of 2 s): nginx in a
namespace at saturation under wrk, untraced, traced by our tracer, traced by
the bcc peer (or its one-line skip reason), and nothing left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netns.fixtures import netns_unavailable
from netns.topology import NETNS_RUN_DIR


def _netns() -> set[str]:
    """The scenario's namespaces (prefix "hs-"; other tests may run meanwhile)."""
    names = os.listdir(NETNS_RUN_DIR) if NETNS_RUN_DIR.exists() else []
    return {n for n in names if n.startswith("hs-")}


@pytest.mark.timeout(240)
def test_saturation_short(tmp_path: Path, monkeypatch):
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    from harness.saturation import run_saturation

    before = _netns()
    # a relative work directory, as `make bench` passes (reports/...): nginx
    # is started elsewhere and once read its config from a doubled path
    monkeypatch.chdir(tmp_path.parent)
    r = run_saturation(Path(tmp_path.name), duration=2, pairs=1, peers=["bcc"])
    assert _netns() == before

    assert r["pairs"] == 1 and r["untraced_rps"] > 0
    assert 0 < r["ratio"] <= 1.5
    assert r["ratio_ci"] is None  # one group: no interval is claimed
    assert isinstance(r["drops"], int) and r["drops"] >= 0
    assert r["events_seen"] > 0
    (traced,) = [x for x in r["runs"] if x["variant"] == "tracer"]
    # every event the kernel produced is delivered or counted as dropped
    assert traced["events_seen"] == traced["events_delivered"] + traced["drops"]
    # one server span per request; wrk does not count its <= 16 in flight at the end
    assert traced["captured"] <= traced["requests"] + 16
    if r["drops"] == 0:
        assert traced["captured"] >= traced["requests"]
    t = r["tracer"]
    assert t["cpu_us_per_request"] > 0 and t["rss_mb"] > 0 and t["ready_s"] > 0

    bcc = r["peers"]["bcc"]
    if "skipped" in bcc:
        assert bcc["skipped"] and "\n" not in bcc["skipped"]
        return
    (peer,) = [x for x in r["runs"] if x["variant"] == "bcc"]
    # scoped to nginx: every line delivered is a request nginx received
    assert peer["captured"] == peer["events_delivered"]
    assert bcc["recall"] >= 0.99
    assert 0 < bcc["ratio"] <= 1.5
    assert bcc["ready_s"] > 0 and bcc["rss_mb"] > 0 and bcc["cpu_us_per_request"] > 0


@pytest.mark.timeout(120)
def test_peer_that_cannot_compile_is_a_one_line_skip(tmp_path: Path, monkeypatch):
    """Real bcc, real compile, against a header tree that lacks the kernel's
    sources: the peer's result is its reason, the tracer's figures stand."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    from harness.peers import setup
    from harness.saturation import run_saturation

    arch = tmp_path / "src" / "linux-headers-6.1.0-1-amd64"
    (arch / "include/generated").mkdir(parents=True)
    (arch / "include/generated/autoconf.h").write_text("#define CONFIG_X86_64 1\n")
    common = arch.with_name("linux-headers-6.1.0-1-common")
    (common / "include/linux").mkdir(parents=True)
    (common / "include/linux/kconfig.h").write_text("#include <generated/autoconf.h>\n")
    monkeypatch.setenv(setup.ENV_HEADERS, str(arch))
    monkeypatch.setenv(setup.ENV_TREE, str(tmp_path / "tree"))

    r = run_saturation(tmp_path / "work", duration=1, pairs=1, peers=["bcc"], install=False)
    skip = r["peers"]["bcc"]["skipped"]
    assert "\n" not in skip
    if skip.startswith("bcc not importable"):
        return  # no bcc on this machine: the other way to skip
    assert skip.startswith("failed in run: bcc exited with 2 at start: "
                           "bcc_http: compile or load failed: ")
    assert "file not found" in skip  # the first compiler error, named
    assert [x["variant"] for x in r["runs"]] == ["untraced", "tracer"]
    assert r["tracer"]["runs"] == 1 and r["events_seen"] > 0
