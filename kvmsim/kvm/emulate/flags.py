"""Model of emulate.c's decode flags: operand-type codes (Op*) and the opcode flag bits.

`DecodeFlag` names every single-bit flag (for printing and the census); the module-level
names (`ModRM`, `DstMem`, `Src2CL`, ...) are plain ints so table building and the decode
hot path do plain integer arithmetic. Layout follows the kernel's (bit values are ours
to choose; keeping the kernel's makes diffs against emulate.c easy).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class OpKind(IntEnum):
    """5-bit operand-type codes used in the Dst/Src/Src2 fields."""

    OpNone = 0
    OpImplicit = 1   # no generic decode
    OpReg = 2
    OpMem = 3
    OpAcc = 4        # AL/AX/EAX/RAX
    OpDI = 5         # ES:(E/R)DI
    OpMem64 = 6
    OpImmUByte = 7
    OpDX = 8
    OpCL = 9
    OpImmByte = 10   # sign-extended
    OpOne = 11
    OpImm = 12       # sign-extended, at most 32 bits
    OpMem16 = 13
    OpMem32 = 14
    OpImmU = 15
    OpSI = 16
    OpImmFAddr = 17
    OpMemFAddr = 18
    OpImmU16 = 19
    OpES = 20
    OpCS = 21
    OpSS = 22
    OpDS = 23
    OpFS = 24
    OpGS = 25
    OpMem8 = 26
    OpImm64 = 27
    OpXLat = 28
    OpAccLo = 29
    OpAccHi = 30


OpNone = OpKind.OpNone.value
OpImplicit = OpKind.OpImplicit.value
OpReg = OpKind.OpReg.value
OpMem = OpKind.OpMem.value
OpAcc = OpKind.OpAcc.value
OpDI = OpKind.OpDI.value
OpMem64 = OpKind.OpMem64.value
OpImmUByte = OpKind.OpImmUByte.value
OpDX = OpKind.OpDX.value
OpCL = OpKind.OpCL.value
OpImmByte = OpKind.OpImmByte.value
OpOne = OpKind.OpOne.value
OpImm = OpKind.OpImm.value
OpMem16 = OpKind.OpMem16.value
OpMem32 = OpKind.OpMem32.value
OpImmU = OpKind.OpImmU.value
OpSI = OpKind.OpSI.value
OpImmFAddr = OpKind.OpImmFAddr.value
OpMemFAddr = OpKind.OpMemFAddr.value
OpImmU16 = OpKind.OpImmU16.value
OpES = OpKind.OpES.value
OpCS = OpKind.OpCS.value
OpSS = OpKind.OpSS.value
OpDS = OpKind.OpDS.value
OpFS = OpKind.OpFS.value
OpGS = OpKind.OpGS.value
OpMem8 = OpKind.OpMem8.value
OpImm64 = OpKind.OpImm64.value
OpXLat = OpKind.OpXLat.value
OpAccLo = OpKind.OpAccLo.value
OpAccHi = OpKind.OpAccHi.value
OpBits = 5
OpMask = (1 << OpBits) - 1

DstShift, SrcShift, Src2Shift = 1, 6, 31


class DecodeFlag(IntFlag):
    """The single-bit opcode flags of emulate.c."""

    ByteOp = 1 << 0
    BitOp = 1 << 11
    MemAbs = 1 << 12
    String = 1 << 13
    Stack = 1 << 14
    Sse = 1 << 18
    ModRM = 1 << 19
    Mov = 1 << 20
    Prot = 1 << 21
    EmulateOnUD = 1 << 22
    NoAccess = 1 << 23
    Op3264 = 1 << 24
    Undefined = 1 << 25
    Lock = 1 << 26
    Priv = 1 << 27
    No64 = 1 << 28
    PageTable = 1 << 29
    NotImpl = 1 << 30
    Mmx = 1 << 40
    Fastop = 1 << 44
    NoWrite = 1 << 45
    SrcWrite = 1 << 46
    NoMod = 1 << 47
    Intercept = 1 << 48
    CheckPerm = 1 << 49
    PrivUD = 1 << 51
    NearBranch = 1 << 52
    No16 = 1 << 53
    IncSP = 1 << 54
    TwoMemOp = 1 << 55
    IsBranch = 1 << 56
    ShadowStack = 1 << 57


ByteOp = DecodeFlag.ByteOp.value
BitOp = DecodeFlag.BitOp.value
MemAbs = DecodeFlag.MemAbs.value
String = DecodeFlag.String.value
Stack = DecodeFlag.Stack.value
Sse = DecodeFlag.Sse.value
ModRM = DecodeFlag.ModRM.value
Mov = DecodeFlag.Mov.value
Prot = DecodeFlag.Prot.value
EmulateOnUD = DecodeFlag.EmulateOnUD.value
NoAccess = DecodeFlag.NoAccess.value
Op3264 = DecodeFlag.Op3264.value
Undefined = DecodeFlag.Undefined.value
Lock = DecodeFlag.Lock.value
Priv = DecodeFlag.Priv.value
No64 = DecodeFlag.No64.value
PageTable = DecodeFlag.PageTable.value
NotImpl = DecodeFlag.NotImpl.value
Mmx = DecodeFlag.Mmx.value
Fastop = DecodeFlag.Fastop.value
NoWrite = DecodeFlag.NoWrite.value
SrcWrite = DecodeFlag.SrcWrite.value
NoMod = DecodeFlag.NoMod.value
Intercept = DecodeFlag.Intercept.value
CheckPerm = DecodeFlag.CheckPerm.value
PrivUD = DecodeFlag.PrivUD.value
NearBranch = DecodeFlag.NearBranch.value
No16 = DecodeFlag.No16.value
IncSP = DecodeFlag.IncSP.value
TwoMemOp = DecodeFlag.TwoMemOp.value
IsBranch = DecodeFlag.IsBranch.value
ShadowStack = DecodeFlag.ShadowStack.value

# Destination operand field.
ImplicitOps = OpImplicit << DstShift
DstReg = OpReg << DstShift
DstMem = OpMem << DstShift
DstAcc = OpAcc << DstShift
DstDI = OpDI << DstShift
DstMem64 = OpMem64 << DstShift
DstMem16 = OpMem16 << DstShift
DstImmUByte = OpImmUByte << DstShift
DstDX = OpDX << DstShift
DstAccLo = OpAccLo << DstShift
DstMask = OpMask << DstShift
# Source operand field.
SrcNone = OpNone << SrcShift
SrcReg = OpReg << SrcShift
SrcMem = OpMem << SrcShift
SrcMem16 = OpMem16 << SrcShift
SrcMem32 = OpMem32 << SrcShift
SrcImm = OpImm << SrcShift
SrcImmByte = OpImmByte << SrcShift
SrcOne = OpOne << SrcShift
SrcImmUByte = OpImmUByte << SrcShift
SrcImmU = OpImmU << SrcShift
SrcSI = OpSI << SrcShift
SrcXLat = OpXLat << SrcShift
SrcImmFAddr = OpImmFAddr << SrcShift
SrcMemFAddr = OpMemFAddr << SrcShift
SrcAcc = OpAcc << SrcShift
SrcImmU16 = OpImmU16 << SrcShift
SrcImm64 = OpImm64 << SrcShift
SrcDX = OpDX << SrcShift
SrcMem8 = OpMem8 << SrcShift
SrcAccHi = OpAccHi << SrcShift
SrcMask = OpMask << SrcShift
# Second source field.
Src2None = OpNone << Src2Shift
Src2Mem = OpMem << Src2Shift
Src2CL = OpCL << Src2Shift
Src2ImmByte = OpImmByte << Src2Shift
Src2One = OpOne << Src2Shift
Src2Imm = OpImm << Src2Shift
Src2ES = OpES << Src2Shift
Src2CS = OpCS << Src2Shift
Src2SS = OpSS << Src2Shift
Src2DS = OpDS << Src2Shift
Src2FS = OpFS << Src2Shift
Src2GS = OpGS << Src2Shift
Src2Mask = OpMask << Src2Shift
# Group mechanism field (which sub-table the opcode points to).
GroupMask = 7 << 15
Group = 1 << 15       # ModRM.reg selects
GroupDual = 2 << 15   # separate tables for mod == 3
Prefix = 3 << 15      # 66/F2/F3 select
RMExt = 4 << 15       # ModRM.rm selects (mod == 3)
Escape = 5 << 15      # x87 escape
InstrDual = 6 << 15   # mod == 3 vs memory
ModeDual = 7 << 15    # 32- vs 64-bit mode
# Alignment class field.
AlignMask = 7 << 41
Aligned = 1 << 41     # e.g. MOVDQA
Unaligned = 2 << 41   # e.g. MOVDQU
Avx = 3 << 41
Aligned16 = 4 << 41   # FXSAVE/FXRSTOR

DstXacc = DstAccLo | SrcAccHi | SrcWrite

_FIELDS = (("Dst", DstShift), ("Src", SrcShift), ("Src2", Src2Shift))
_GROUPS = {Group: "Group", GroupDual: "GroupDual", Prefix: "Prefix", RMExt: "RMExt",
           Escape: "Escape", InstrDual: "InstrDual", ModeDual: "ModeDual"}
_ALIGN = {Aligned: "Aligned", Unaligned: "Unaligned", Avx: "Avx", Aligned16: "Aligned16"}


def describe(flags: int) -> str:
    """Render a flags word with the kernel's names, e.g. 'DstMem|SrcReg|ModRM|Lock'."""
    parts = []
    for name, shift in _FIELDS:
        kind = (flags >> shift) & OpMask
        if kind:
            parts.append(f"{name}:{OpKind(kind).name[2:]}")
    if flags & GroupMask:
        parts.append(_GROUPS[flags & GroupMask])
    if flags & AlignMask:
        parts.append(_ALIGN.get(flags & AlignMask, "Align?"))
    for f in DecodeFlag:
        if flags & f.value:
            parts.append(f.name)
    return "|".join(parts) or "0"
