"""DWARF CFI unwinder over a copy of the user stack (x86-64).

Input: the registers at a probe (rip, rsp, rbp; rbx, r12-r15 when known) and
the bytes copied from rsp upward. For each frame, the .eh_frame (else
.debug_frame) FDE of the module holding the pc gives a rule row: CFA =
reg + offset (or a DWARF expression: the standard PLT one and other simple
ones are evaluated), the return address is at CFA-8, and callee-saved
registers saved in the frame are read back from the copy. Without an FDE (JIT code, hand-written asm)
the frame pointer chain is tried: [rbp] = caller's rbp, [rbp+8] = return
address.

It stops at the first of: max_frames, a read past the copy, the outermost
frame (return address undefined or 0), a pc outside any readable module
with no usable frame pointer, an unsupported CFI expression, or a CFA that
does not move up the stack. UnwindResult.reason says which.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from elftools.dwarf.callframe import RegisterRule

from .procmaps import ProcMaps

REGNUM = {"rax": 0, "rdx": 1, "rcx": 2, "rbx": 3, "rsi": 4, "rdi": 5, "rbp": 6, "rsp": 7,
          "r8": 8, "r9": 9, "r10": 10, "r11": 11, "r12": 12, "r13": 13, "r14": 14, "r15": 15,
          "rip": 16}
RSP, RBP, RA = 7, 6, 16
CALLEE_SAVED = (3, 6, 12, 13, 14, 15)  # rbx rbp r12-r15: kept across calls by the SysV ABI
MASK = (1 << 64) - 1
_U64 = struct.Struct("<Q")

# Why unwinding stopped (UnwindResult.reason)
MAX_FRAMES = "max_frames"
END_OF_STACK = "end_of_stack"  # outermost frame: return address undefined or 0
STACK_COPY_END = "stack_copy_end"  # the next read is past the copied bytes
NO_MODULE = "no_module"  # pc in anonymous memory (JIT), [vdso] or an unreadable file, no fp
NO_FDE = "no_fde"  # pc in a module without CFI for it, and no usable frame pointer
CFA_EXPRESSION = "cfa_expression"  # a CFI expression this evaluator does not support
REGISTER_UNKNOWN = "register_unknown"  # a rule needs a register that was not captured
BAD_CFA = "bad_cfa"  # the CFA did not move up the stack (corrupt stack or CFI)
REASONS = (MAX_FRAMES, END_OF_STACK, STACK_COPY_END, NO_MODULE, NO_FDE, CFA_EXPRESSION,
           REGISTER_UNKNOWN, BAD_CFA)


class UnwindResult(NamedTuple):
    addrs: list[int]  # innermost first: the probe's rip, then return addresses
    reason: str  # one of REASONS
    methods: list[str]  # per step from addrs[i] to addrs[i+1]: "dwarf" or "fp"
    stack_used: int  # bytes of the copy the unwind needed (highest CFA - stack_addr)


class _Stop(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def unwind(pid_maps: ProcMaps, regs: dict[str, int], stack: bytes, stack_addr: int,
           max_frames: int = 64) -> list[int]:
    """Return addresses, innermost first (rip first)."""
    return unwind_ex(pid_maps, regs, stack, stack_addr, max_frames).addrs


def unwind_ex(pid_maps: ProcMaps, regs: dict[str, int], stack: bytes, stack_addr: int,
              max_frames: int = 64) -> UnwindResult:
    """unwind() plus why it stopped and how each frame was found."""
    r: dict[int, int | None] = {REGNUM[k]: v & MASK for k, v in regs.items()
                                if k in REGNUM and v is not None}
    if r.get(RA) is None or r.get(RSP) is None:
        return UnwindResult([], REGISTER_UNKNOWN, [], 0)
    end = stack_addr + len(stack)

    def read(addr: int) -> int:
        if stack_addr <= addr and addr + 8 <= end:
            return _U64.unpack_from(stack, addr - stack_addr)[0]
        raise _Stop(STACK_COPY_END)

    addrs: list[int] = []
    methods: list[str] = []
    exact_pc = True  # the probe's rip (or a signal-interrupted pc) is not a return address
    reason = MAX_FRAMES
    while True:
        pc = r[RA]
        addrs.append(pc)
        if len(addrs) >= max_frames:
            break
        try:
            r, exact_pc, method = _step(pid_maps, r, pc if exact_pc else pc - 1, read)
        except _Stop as stop:
            reason = stop.reason
            break
        methods.append(method)
    return UnwindResult(addrs, reason, methods, max(0, r[RSP] - stack_addr))


def _step(pid_maps: ProcMaps, r: dict, pc: int, read) -> tuple[dict, bool, str]:
    """Registers of the caller of the frame executing at pc."""
    mod = pid_maps.module(pc)
    hit = mod.elf.cfi(mod.vaddr) if mod is not None else None
    table = hit[0].table(hit[1]) if hit is not None else None
    row = table.row(mod.vaddr) if table is not None else None
    if row is None:
        return _step_fp(pid_maps, r, read, NO_MODULE if mod is None else NO_FDE), False, "fp"
    sp = r[RSP]
    if row.cfa_expr is not None:
        cfa = _eval(row.cfa_expr, r, read)
    else:
        base = r.get(row.cfa_reg)
        if base is None:
            raise _Stop(REGISTER_UNKNOWN)
        cfa = (base + row.cfa_off) & MASK
    if cfa <= sp:
        raise _Stop(BAD_CFA)
    new: dict[int, int | None] = {RSP: cfa}
    for regno in (*CALLEE_SAVED, RA):
        rule = row.rules.get(regno)
        if rule is None:
            # x86-64 CIEs always give the return address; callee-saved
            # registers without a rule were not touched by this frame
            new[regno] = read((cfa - 8) & MASK) if regno == RA else r.get(regno)
            continue
        kind, arg = rule
        if kind == RegisterRule.OFFSET:
            new[regno] = read((cfa + arg) & MASK)
        elif kind == RegisterRule.VAL_OFFSET:
            new[regno] = (cfa + arg) & MASK
        elif kind == RegisterRule.SAME_VALUE:
            new[regno] = r.get(regno)
        elif kind == RegisterRule.REGISTER:
            new[regno] = r.get(arg)
        elif kind == RegisterRule.EXPRESSION:
            new[regno] = read(_eval(arg, r, read, cfa))
        elif kind == RegisterRule.VAL_EXPRESSION:
            new[regno] = _eval(arg, r, read, cfa)
        else:  # UNDEFINED (the outermost frame's return address), ARCHITECTURAL
            new[regno] = None
    if not new[RA]:
        raise _Stop(END_OF_STACK)
    return new, table.fde.signal, "dwarf"


def _step_fp(pid_maps: ProcMaps, r: dict, read, why: str) -> dict:
    """Frame-pointer step: valid only if rbp points into the stack above rsp
    and the saved return address lands in executable memory."""
    bp, sp = r.get(RBP), r[RSP]
    if bp is None or bp < sp or bp & 7:
        raise _Stop(why)
    try:
        ra = read(bp + 8)
        saved_bp = read(bp)
    except _Stop:
        raise _Stop(why) from None
    if ra == 0:
        raise _Stop(END_OF_STACK)
    m = pid_maps.find(ra)
    if m is None or not m.executable:
        raise _Stop(why)
    # the other callee-saved registers are unknown after an fp step
    return {RSP: bp + 16, RBP: saved_bp, RA: ra}


def _eval(ops: list, r: dict, read, push: int | None = None) -> int:
    """A DWARF expression over the registers and the stack copy: the subset
    CFI uses (the PLT's CFA, signal frames' register slots)."""
    st: list[int] = [] if push is None else [push]
    try:
        for name, args in ops:
            if name.startswith("DW_OP_lit"):
                st.append(int(name[9:]))
            elif name.startswith("DW_OP_breg") and name != "DW_OP_bregx":
                v = r.get(int(name[10:]))
                if v is None:
                    raise _Stop(REGISTER_UNKNOWN)
                st.append((v + args[0]) & MASK)
            elif name == "DW_OP_bregx":
                v = r.get(args[0])
                if v is None:
                    raise _Stop(REGISTER_UNKNOWN)
                st.append((v + args[1]) & MASK)
            elif name.startswith("DW_OP_const"):
                st.append(args[0] & MASK)
            elif name == "DW_OP_plus_uconst":
                st.append((st.pop() + args[0]) & MASK)
            elif name == "DW_OP_deref":
                st.append(read(st.pop()))
            elif name in _BINARY:
                b, a = st.pop(), st.pop()
                st.append(_BINARY[name](a, b) & MASK)
            elif name == "DW_OP_dup":
                st.append(st[-1])
            elif name == "DW_OP_drop":
                st.pop()
            elif name == "DW_OP_swap":
                st[-1], st[-2] = st[-2], st[-1]
            elif name == "DW_OP_over":
                st.append(st[-2])
            elif name == "DW_OP_neg":
                st.append(-st.pop() & MASK)
            elif name == "DW_OP_not":
                st.append(~st.pop() & MASK)
            elif name == "DW_OP_nop":
                continue
            else:
                raise _Stop(CFA_EXPRESSION)
    except IndexError:
        raise _Stop(CFA_EXPRESSION) from None
    if not st:
        raise _Stop(CFA_EXPRESSION)
    return st[-1]


def _signed(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


_BINARY = {
    "DW_OP_plus": lambda a, b: a + b,
    "DW_OP_minus": lambda a, b: a - b,
    "DW_OP_mul": lambda a, b: a * b,
    "DW_OP_and": lambda a, b: a & b,
    "DW_OP_or": lambda a, b: a | b,
    "DW_OP_xor": lambda a, b: a ^ b,
    "DW_OP_shl": lambda a, b: a << b if b < 64 else 0,
    "DW_OP_shr": lambda a, b: a >> b,
    "DW_OP_shra": lambda a, b: _signed(a) >> b,
    "DW_OP_ge": lambda a, b: int(_signed(a) >= _signed(b)),
    "DW_OP_gt": lambda a, b: int(_signed(a) > _signed(b)),
    "DW_OP_le": lambda a, b: int(_signed(a) <= _signed(b)),
    "DW_OP_lt": lambda a, b: int(_signed(a) < _signed(b)),
    "DW_OP_eq": lambda a, b: int(a == b),
    "DW_OP_ne": lambda a, b: int(a != b),
}
