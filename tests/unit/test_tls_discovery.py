"""TLS library discovery without root: symbol offsets and /proc scanning."""

import os
import shutil

import pytest

from tracer import tls


def _slow_offsets(path):
    """The same lookup through pyelftools' own symbol index (the reference)."""
    elffile = pytest.importorskip("elftools.elf.elffile")
    from elftools.elf.sections import SymbolTableSection

    ELFFile = elffile.ELFFile

    out = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        for sec in elf.iter_sections():
            if not isinstance(sec, SymbolTableSection):
                continue
            for name in tls.HOOKS:
                for sym in sec.get_symbol_by_name(name) or ():
                    if name not in out and sym["st_info"]["type"] == "STT_FUNC" \
                            and sym["st_shndx"] != "SHN_UNDEF":
                        out[name] = tls._file_offset(
                            [(g["p_vaddr"], g["p_memsz"], g["p_offset"]) for g in loads],
                            sym["st_value"])
    return out


def _system_libssl():
    for p in tls.SYSTEM_LIBS:
        if os.path.exists(p):
            return p
    pytest.skip("no system libssl")


def test_symbol_offsets_match_pyelftools_on_libssl():
    path = _system_libssl()
    got = tls.symbol_offsets(path)
    assert set(tls.REQUIRED) <= set(got)
    assert got == _slow_offsets(path)


def test_consider_skips_missing_and_non_elf_files_quietly(tmp_path):
    """A gone file or a non-ELF file is not OpenSSL, and not a failure."""
    f = tmp_path / "fake.so"
    f.write_bytes(b"SSL_read\0SSL_write\0SSL_do_handshake\0" * 10)
    probes = tls.TlsProbes(obj=None)
    assert not probes.consider(str(f), 1, 1)
    assert not probes.consider(str(tmp_path / "missing"), 1, 2)
    assert probes.failed == {} and probes.libraries == {}
    assert probes.seen == {(1, 1), (1, 2)}


def test_not_elf_gives_nothing(tmp_path):
    f = tmp_path / "fake.so"
    f.write_bytes(b"SSL_read\0SSL_write\0" * 10)
    assert tls.symbol_offsets(str(f)) == {}


def test_no_openssl_in_libc():
    libc = "/lib/x86_64-linux-gnu/libc.so.6"
    if not os.path.exists(libc):
        pytest.skip("no glibc at the Debian path")
    assert tls.symbol_offsets(libc) == {}


def test_static_openssl_in_node_is_found_by_symbol():
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed")
    node = os.path.realpath(node)
    got = tls.symbol_offsets(node)
    if not got:
        pytest.skip("this node links OpenSSL dynamically")
    assert set(got) == set(tls.HOOKS)


def test_exec_mappings_of_this_process():
    maps = tls.exec_mappings(os.getpid())
    paths = {p for p, _, _ in maps}
    assert os.path.realpath("/proc/self/exe") in paths
    assert all(isinstance(dev, int) and ino > 0 for _, dev, ino in maps)
    assert tls.exec_mappings(2**22 + 12345) == []  # no such process


def test_agent_traces_on_without_tls(monkeypatch, caplog):
    """No uprobes (or no tls.bpf.o): one warning, the reason in the summary,
    and the syscall side keeps going."""
    from tests.unit.ringsynth import SynthRing
    from tracer import agent, loader, sock

    def refuse(*a, **kw):
        raise loader.AttachError("cannot attach uprobe ssl_read_enter: EPERM",
                                 program="ssl_read_enter")

    monkeypatch.setattr(tls.TlsProbes, "load", refuse)
    monkeypatch.setattr(sock.SockKernel, "loaded", lambda self: object())  # as if loaded
    t = agent.Tracer(tls_plaintext=True, source=SynthRing().reader())
    with caplog.at_level("WARNING", logger="tracer.agent"):
        t.start()
    assert t.tls is None
    assert "EPERM" in t.tls_unavailable
    assert len(caplog.records) == 1 and "TLS plaintext not traced" in caplog.text
    s = t.stop()
    assert (s["tls_unavailable"], s["tls_libraries"]) == (t.tls_unavailable, [])


def test_name_offsets_finds_suffix_shared_names():
    # st_name may point into the tail of a longer string (suffix sharing):
    # "\0xSSL_read\0" holds "SSL_read" at offset 2.
    strtab = b"\0xSSL_read\0SSL_write\0SSL_read_ex\0"
    want = tls._name_offsets(strtab)
    assert want[2] == "SSL_read"
    assert want[11] == "SSL_write"
    assert want[21] == "SSL_read_ex"
    assert strtab.index(b"SSL_read_ex") == 21
    assert 1 not in want  # "xSSL_read" itself is not a hook
