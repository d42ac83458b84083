"""Model of arch/x86/kvm/x86.c port I/O: kvm_fast_pio, emulator_pio_in_out and the completions.

  OUT: kvm_fast_pio_out → emulator_pio_out → in-kernel device? skip : exit (cui =
       complete_fast_pio_out, RIP still at the OUT until the next KVM_RUN)
  IN:  kvm_fast_pio_in  → emulator_pio_in  → in-kernel device? RAX, skip : exit (cui =
       complete_fast_pio_in merges pio data into RAX, then skips)
"""

from __future__ import annotations

from kvmsim.errors import KvmSimBug
from kvmsim.kvm.kvm_cache_regs import kvm_get_linear_rip
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.x86_exception import kvm_skip_emulated_instruction
from kvmsim.probe import PROBES, kfunc, tracepoint
from kvmsim.uapi import KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_PIO_PAGE_OFFSET, PAGE_SIZE, KvmExit

_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF}
_KVM_EXIT_IO = int(KvmExit.IO)                          # plain ints: ctypes stores them without __index__
_PIO_DATA_OFFSET = KVM_PIO_PAGE_OFFSET * PAGE_SIZE


def _trace_pio(is_in: bool, port: int, size: int, count: int, data: bytes) -> None:
    val = int.from_bytes(data[:size], "little")
    tracepoint("kvm_pio", rw=0 if is_in else 1, port=port, size=size, count=count, val=val,
               text=f"pio_{'read' if is_in else 'write'} at 0x{port:x} size {size} count {count} "
                    f"val 0x{val:x} {'(...)' if count > 1 else ''}".rstrip())


@kfunc("port", "size", "count", "is_in")
def emulator_pio_in_out(vcpu: KvmVcpu, size: int, port: int, data: bytearray, count: int, is_in: bool) -> int:
    """Try KVM_PIO_BUS for each element; the first miss goes to userspace (reference §3.4)."""
    bus = vcpu.kvm.buses["KVM_PIO_BUS"]
    if bus.ranges:
        for i in range(count):
            chunk = bytearray(size)
            if is_in:
                r = bus.read(port, size, chunk)
                if r == 0:
                    data[i * size:(i + 1) * size] = chunk
            else:
                r = bus.write(port, size, bytes(data[i * size:(i + 1) * size]))
            if r != 0:
                if i == 0:
                    break
                if is_in:  # the device vanished mid-string: zero-fill the rest
                    data[i * size:count * size] = bytes((count - i) * size)
                return 1
        else:
            return 1
    pio = vcpu.arch.pio
    pio.port, pio.is_in, pio.count, pio.size = port, is_in, count, size
    n = size * count
    vcpu.pio_data[:n] = bytes(n) if is_in else data[:n]
    run = vcpu.run
    run.exit_reason = _KVM_EXIT_IO
    io = run.io
    io.direction = KVM_EXIT_IO_IN if is_in else KVM_EXIT_IO_OUT
    io.size, io.port, io.count = size, port, count
    io.data_offset = _PIO_DATA_OFFSET
    return 0


def emulator_pio_in(vcpu: KvmVcpu, size: int, port: int, data: bytearray, count: int) -> int:
    r = emulator_pio_in_out(vcpu, size, port, data, count, True)
    if r and PROBES.enabled:
        _trace_pio(True, port, size, count, bytes(data))
    return r


def emulator_pio_out(vcpu: KvmVcpu, size: int, port: int, data: bytearray, count: int) -> int:
    if PROBES.enabled:
        _trace_pio(False, port, size, count, bytes(data))
    return emulator_pio_in_out(vcpu, size, port, data, count, False)


def complete_emulator_pio_in(vcpu: KvmVcpu, out: bytearray) -> None:
    """Copy size*count bytes userspace left in the pio page; pio.count = 0."""
    pio = vcpu.arch.pio
    n = pio.size * pio.count
    out[:n] = vcpu.pio_data[:n]
    if PROBES.enabled:
        _trace_pio(True, pio.port, pio.size, pio.count, bytes(out[:n]))
    pio.count = 0


# ---------------------------------------------------------------- fast (non-string) PIO

@kfunc("size", "port", "is_in")
def kvm_fast_pio(vcpu: KvmVcpu, size: int, port: int, is_in: bool) -> int:
    """Handled in the kernel → skip now; else the completion skips on the next KVM_RUN."""
    ret = kvm_fast_pio_in(vcpu, size, port) if is_in else kvm_fast_pio_out(vcpu, size, port)
    return ret and kvm_skip_emulated_instruction(vcpu)


def kvm_fast_pio_out(vcpu: KvmVcpu, size: int, port: int) -> int:
    val = (vcpu.hw.reg("rax") & _MASK[size]).to_bytes(4, "little")
    ret = emulator_pio_out(vcpu, size, port, bytearray(val), 1)
    if ret:
        return ret
    if port == 0x7E and vcpu.kvm.params.quirk_out_7e_inc_rip:
        vcpu.arch.complete_userspace_io = complete_fast_pio_out_port_0x7e
        kvm_skip_emulated_instruction(vcpu)
    else:
        vcpu.arch.pio.linear_rip = kvm_get_linear_rip(vcpu)
        vcpu.arch.complete_userspace_io = complete_fast_pio_out
    return 0


@kfunc()
def complete_fast_pio_out(vcpu: KvmVcpu) -> int:
    vcpu.arch.pio.count = 0
    if kvm_get_linear_rip(vcpu) != vcpu.arch.pio.linear_rip:
        return 1  # userspace moved RIP: do not skip
    return kvm_skip_emulated_instruction(vcpu)


@kfunc()
def complete_fast_pio_out_port_0x7e(vcpu: KvmVcpu) -> int:
    vcpu.arch.pio.count = 0
    return 1


def kvm_fast_pio_in(vcpu: KvmVcpu, size: int, port: int) -> int:
    # 8/16-bit IN merges into RAX; 32-bit zero-extends.
    rax = vcpu.hw.reg("rax")
    val = bytearray(((rax if size < 4 else 0) & 0xFFFF_FFFF).to_bytes(4, "little"))
    ret = emulator_pio_in(vcpu, size, port, val, 1)
    if ret:
        _write_in_result(vcpu, size, rax, val)
        return ret
    vcpu.arch.pio.linear_rip = kvm_get_linear_rip(vcpu)
    vcpu.arch.complete_userspace_io = complete_fast_pio_in
    return 0


def _write_in_result(vcpu: KvmVcpu, size: int, rax: int, val: bytearray) -> None:
    v = int.from_bytes(val[:size], "little")
    vcpu.hw.set_reg("rax", (rax & ~_MASK[size]) | v if size < 4 else v)


@kfunc()
def complete_fast_pio_in(vcpu: KvmVcpu) -> int:
    pio = vcpu.arch.pio
    if pio.count != 1:
        raise KvmSimBug(f"complete_fast_pio_in with pio.count={pio.count}")
    if kvm_get_linear_rip(vcpu) != pio.linear_rip:
        pio.count = 0
        return 1
    rax = vcpu.hw.reg("rax")
    size = pio.size
    val = bytearray(((rax if size < 4 else 0) & 0xFFFF_FFFF).to_bytes(4, "little"))
    complete_emulator_pio_in(vcpu, val)
    _write_in_result(vcpu, size, rax, val)
    return kvm_skip_emulated_instruction(vcpu)
