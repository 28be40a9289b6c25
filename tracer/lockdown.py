"""Kernel lockdown: the mode, and which BPF helpers our objects call against
what each mode forbids.

The helper audit reads the compiled objects themselves: every call
instruction (BPF_JMP|BPF_CALL, src_reg 0) of every program section gives a
helper id, named by the running kernel's `enum bpf_func_id` (vmlinux BTF).
So the claim "nothing we ship calls a helper integrity forbids" is checked
on the bytes that are loaded, not on the C source.

What lockdown takes away (include/linux/security.h `enum lockdown_reason`;
integrity forbids the reasons up to LOCKDOWN_INTEGRITY_MAX, confidentiality
all up to LOCKDOWN_CONFIDENTIALITY_MAX):
- LOCKDOWN_BPF_WRITE_USER (integrity): bpf_probe_write_user
  (kernel/trace/bpf_trace.c);
- LOCKDOWN_BPF_READ_KERNEL (confidentiality): bpf_probe_read_kernel(_str),
  the compat bpf_probe_read(_str) and bpf_probe_read_kernel_dynptr
  (kernel/bpf/helpers.c bpf_base_func_proto, kernel/trace/bpf_trace.c); the
  helper is then unknown to the verifier and the whole object fails to load;
- LOCKDOWN_TRACEFS, LOCKDOWN_KPROBES, LOCKDOWN_PERF (confidentiality):
  tracefs (tracepoint ids), kprobes, some perf sampling.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

SECURITYFS_LOCKDOWN = "/sys/kernel/security/lockdown"
MODES = ("none", "integrity", "confidentiality")

FORBIDDEN_INTEGRITY = frozenset({"bpf_probe_write_user"})
FORBIDDEN_CONFIDENTIALITY = FORBIDDEN_INTEGRITY | {
    "bpf_probe_read_kernel", "bpf_probe_read_kernel_str", "bpf_probe_read",
    "bpf_probe_read_str", "bpf_probe_read_kernel_dynptr",
}

# What each object's kernel reads do for the tracer: said when confidentiality
# takes them away. Objects not listed only lose what the audit names.
KERNEL_READS_FOR = {
    "sock": "socket identification (walks task->files to the struct sock: BTF loads, CO-RE reads)",
    "inject": "injection (netns of the task, CO-RE reads; sk_msg payload copies)",
    "tls": "TLS plaintext (the socket behind an SSL*, CO-RE reads)",
    "funcs": "function tracing (netns of the task, CO-RE reads)",
    "kfuncs": "kernel function tracing (netns of the task, CO-RE reads)",
}

BPF_JMP_CALL = 0x85  # BPF_JMP | BPF_CALL | BPF_K
BTF_KIND_ENUM = 6


def parse_mode(text: str) -> str:
    """The bracketed word of securityfs's lockdown file:
    'none [integrity] confidentiality' -> 'integrity'; 'unknown' otherwise."""
    start, end = text.find("["), text.find("]")
    mode = text[start + 1:end].strip() if 0 <= start < end else ""
    return mode if mode in MODES else "unknown"


def read_mode(path: str = SECURITYFS_LOCKDOWN) -> str:
    try:
        with open(path) as f:
            return parse_mode(f.read())
    except OSError:
        return "unknown"


def forbidden(mode: str) -> frozenset[str]:
    return {"integrity": FORBIDDEN_INTEGRITY,
            "confidentiality": FORBIDDEN_CONFIDENTIALITY}.get(mode, frozenset())


# ---- the audit ----------------------------------------------------------------------

def helper_ids(path: str | Path) -> dict[str, set[int]]:
    """section -> helper ids called in it, for every executable section of a
    BPF ELF object (programs and .text subprograms)."""
    from elftools.elf.constants import SH_FLAGS
    from elftools.elf.elffile import ELFFile

    out: dict[str, set[int]] = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if elf["e_machine"] != "EM_BPF":
            raise ValueError(f"{path}: not a BPF object ({elf['e_machine']})")
        for sec in elf.iter_sections():
            if sec["sh_type"] != "SHT_PROGBITS" or not sec["sh_flags"] & SH_FLAGS.SHF_EXECINSTR:
                continue
            ids = helper_calls(sec.data(), elf.little_endian)
            if ids:
                out[sec.name] = ids
    return out


def helper_calls(code: bytes, little_endian: bool = True) -> set[int]:
    """Helper ids of the call instructions in BPF bytecode. The second half of
    a 16-byte ld_imm64 has opcode 0, so stepping by 8 bytes is safe."""
    ids = set()
    fmt = "<BBhi" if little_endian else ">BBhi"
    for op, regs, _off, imm in struct.iter_unpack(fmt, code[:len(code) // 8 * 8]):
        src = regs >> 4 if little_endian else regs & 0xF
        if op == BPF_JMP_CALL and src == 0:  # src 1: bpf-to-bpf call, 2: kfunc
            ids.add(imm)
    return ids


def kernel_helper_names() -> dict[int, str]:
    """id -> 'bpf_<name>' from the running kernel's enum bpf_func_id (BTF);
    empty when there is no BTF."""
    from . import loader

    try:
        lib = loader.libbpf()
    except loader.LoaderError:
        return {}
    btf = lib.btf__load_vmlinux_btf()
    if not btf:
        return {}
    try:
        tid = lib.btf__find_by_name_kind(btf, b"bpf_func_id", BTF_KIND_ENUM)
        if tid < 0:
            return {}
        t = lib.btf__type_by_id(btf, tid)
        vlen = t.contents.info & 0xFFFF
        members = (ctypes.c_uint32 * (2 * vlen)).from_address(
            ctypes.addressof(t.contents) + ctypes.sizeof(t.contents))
        names = {}
        for i in range(vlen):
            name = lib.btf__name_by_offset(btf, members[2 * i]).decode()
            value = ctypes.c_int32(members[2 * i + 1]).value
            if name.startswith("BPF_FUNC_") and name != "BPF_FUNC_unspec":
                names[value] = "bpf_" + name.removeprefix("BPF_FUNC_")
        return names
    finally:
        lib.btf__free(btf)


@dataclass
class Audit:
    objects: dict[str, set[str]] = field(default_factory=dict)  # object -> helper names
    unnamed: dict[str, set[int]] = field(default_factory=dict)  # ids the kernel does not name

    def helpers(self) -> set[str]:
        return set().union(*self.objects.values()) if self.objects else set()

    def violations(self, mode: str) -> dict[str, set[str]]:
        """object -> the helpers it calls that `mode` forbids."""
        bad = forbidden(mode)
        return {o: h & bad for o, h in self.objects.items() if h & bad}

    def as_dict(self) -> dict:
        return {
            "objects": {o: sorted(h) for o, h in sorted(self.objects.items())},
            "forbidden_by_integrity_used": sorted(set().union(
                *self.violations("integrity").values())),
            "forbidden_by_confidentiality_used": {
                o: sorted(h) for o, h in sorted(self.violations("confidentiality").items())},
            "unnamed_helper_ids": {o: sorted(i) for o, i in sorted(self.unnamed.items())},
        }


def audit(build_dir: str | Path | None = None, names: dict[int, str] | None = None) -> Audit:
    """Helpers called by every tracer/bpf/build/*.bpf.o (the feature-probe
    object aside: it exists to try what may be refused)."""
    from . import loader

    build = Path(build_dir) if build_dir else loader.BUILD_DIR
    names = kernel_helper_names() if names is None else names
    res = Audit()
    for path in sorted(build.glob("*.bpf.o")):
        obj = path.name.removesuffix(".bpf.o")
        if obj == "features":
            continue
        ids = set().union(*helper_ids(path).values())
        res.objects[obj] = {names.get(i, f"helper#{i}") for i in ids}
        unknown = {i for i in ids if i not in names}
        if unknown:
            res.unnamed[obj] = unknown
    return res


def consequences(mode: str, a: Audit) -> list[str]:
    """One line per thing lost under `mode` (empty when nothing is)."""
    lines = []
    for obj, helpers in sorted(a.violations(mode).items()):
        what = KERNEL_READS_FOR.get(obj, f"{obj}.bpf.o")
        lines.append(f"{obj}.bpf.o cannot load ({', '.join(sorted(helpers))} forbidden): "
                     f"no {what}")
    if mode == "confidentiality":
        lines.append("tracefs is locked (LOCKDOWN_TRACEFS): tracepoint ids cannot be read, "
                     "so tracepoint programs cannot attach")
    return lines


def refusal(mode: str, a: Audit) -> str:
    """The one line `run` exits 2 with when tracing cannot work under `mode`
    ('' when it can)."""
    if "sock" in a.violations(mode) or mode == "confidentiality":
        return (f"lockdown={mode} forbids what tracing needs: "
                + "; ".join(consequences(mode, a))
                + ": boot with lockdown=integrity (or none) to trace")
    return ""


def mode_here() -> str:
    """read_mode(), mounting securityfs first if it is not (it is not at boot
    on our machines; mounting needs CAP_SYS_ADMIN)."""
    if not os.path.exists(SECURITYFS_LOCKDOWN) and os.path.isdir("/sys/kernel/security"):
        os.system("mount -t securityfs securityfs /sys/kernel/security >/dev/null 2>&1")
    return read_mode()


__all__ = ["parse_mode", "read_mode", "mode_here", "forbidden", "helper_ids",
           "helper_calls", "kernel_helper_names", "audit", "Audit", "consequences", "refusal",
           "FORBIDDEN_INTEGRITY", "FORBIDDEN_CONFIDENTIALITY"]
