"""A scenario text shared by the exit-stream tests on both backends: `loops` MMIO reads and
writes of a register bank, then the debug-exit OUT (2 * loops + 1 exits to userspace)."""


def mmio_rw_text(loops: int) -> str:
    return f"""name: mmio-rw-loop
description: MMIO reads and writes of a register bank, then the debug-exit OUT
guest:
  mode: long64
  asm: |
    .include "kvmsim.inc"
    .globl _start
    _start:
        movl $0xd0000000, %ebx
        movl ${loops}, %ecx
    1:  movl (%rbx), %eax
        movl %ecx, 4(%rbx)
        decl %ecx
        jnz 1b
        EXIT 0
devices:
  - {{type: debug-exit, port: 0xf4}}
  - {{type: regbank, gpa: 0xd0000000, size: 0x1000, values: {{0x0: 0x1234}}}}
limits: {{max_exits: 100000}}
"""
