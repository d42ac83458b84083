# probe.S — a multiboot (v1) kernel that checks what the loader handed it and reports on
# serial, kvm-unit-tests style (vmm/multiboot.py is the loader; scenarios/multiboot-probe.yaml
# boots it).  Checks: EAX = 0x2BADB002, the info block's flags, one module, a zeroed bss,
# CR0.PE=1 with CR0.PG=0, EFLAGS.IF=0; prints mem_lower, mem_upper, the command line, the
# module's string and bytes, and the memory map, so a scenario can expect them.
# Ends with "SUMMARY: N tests, M failures" and debug-exit code 0 (none failed) or 1.
#
# probe.elf is committed (a scenario needs the file); rebuild it from the repository root with
#   as --32 -I guests/lib --defsym KVMSIM_MODE=32 --defsym KVMSIM_MODE_REAL16=0 \
#      --defsym KVMSIM_MODE_PROT32=1 --defsym KVMSIM_MODE_LONG64=0 --defsym KVMSIM_MODE_RESET=0 \
#      -o /tmp/probe.o guests/multiboot/probe.S
#   ld -m elf_i386 -T guests/multiboot/probe.ld -o guests/multiboot/probe.elf /tmp/probe.o
# (tests/test_multiboot.py rebuilds it and compares the loadable bytes).

        .code32
        .include "kvmsim.inc"

MB_MAGIC = 0x1BADB002
MB_FLAGS = 0x00000002                 # MEMORY_INFO: we want mem_* and the memory map
MB_LOADER_MAGIC = 0x2BADB002
MBI_FLAGS = 0
MBI_MEM_LOWER = 4
MBI_MEM_UPPER = 8
MBI_CMDLINE = 16
MBI_MODS_COUNT = 20
MBI_MODS_ADDR = 24
MBI_MMAP_LENGTH = 44
MBI_MMAP_ADDR = 48
MBI_WANT = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6)   # memory, cmdline, mods, mmap
BSS_BYTES = 0x10000

        .section .multiboot, "a"
        .balign 4
        .long   MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .text
        .globl  start
start:
        movl    %eax, saved_eax               # before anything touches them
        movl    %ebx, saved_ebx
        movl    $stack_top, %esp
        pushfl
        popl    saved_eflags
        movl    %cr0, %eax
        movl    %eax, saved_cr0
        INSTALL_EXCEPTION_HANDLERS

        cmpl    $MB_LOADER_MAGIC, saved_eax
        REPORT  e, "eax is the multiboot magic 0x2badb002"
        movl    saved_cr0, %eax
        andl    $0x80000001, %eax
        cmpl    $1, %eax
        REPORT  e, "cr0: PE set, PG clear"
        testl   $0x200, saved_eflags
        REPORT  z, "eflags.if clear"

        movl    saved_ebx, %ebx
        movl    MBI_FLAGS(%ebx), %eax
        andl    $MBI_WANT, %eax
        cmpl    $MBI_WANT, %eax
        REPORT  e, "info flags: memory, cmdline, mods, mmap"

        SERIAL_PRINT "mem_lower="
        movl    MBI_MEM_LOWER(%ebx), %eax
        call    serial_putdec
        SERIAL_PRINT " mem_upper="
        movl    MBI_MEM_UPPER(%ebx), %eax
        call    serial_putdec
        SERIAL_PRINT "\ncmdline=["
        movl    MBI_CMDLINE(%ebx), %esi
        call    serial_puts
        SERIAL_PRINT "]\n"

        cmpl    $1, MBI_MODS_COUNT(%ebx)
        REPORT  e, "one module"
        movl    MBI_MODS_ADDR(%ebx), %edi
        SERIAL_PRINT "module string=["
        movl    8(%edi), %esi
        call    serial_puts
        SERIAL_PRINT "] bytes=["
        movl    (%edi), %esi                  # mod_start
1:      cmpl    4(%edi), %esi                 # mod_end
        jae     2f
        movb    (%esi), %al
        call    serial_putc
        incl    %esi
        jmp     1b
2:      SERIAL_PRINT "]\n"
        testl   $0xfff, (%edi)
        REPORT  z, "module page-aligned"

        movl    MBI_MMAP_ADDR(%ebx), %esi     # entries: size, base (u64), length (u64), type
        movl    %esi, %edi
        addl    MBI_MMAP_LENGTH(%ebx), %edi
3:      cmpl    %edi, %esi
        jae     4f
        SERIAL_PRINT "mmap base="
        movl    4(%esi), %eax
        call    serial_puthex
        SERIAL_PRINT " length="
        movl    12(%esi), %eax
        call    serial_puthex
        SERIAL_PRINT " type="
        movl    20(%esi), %eax
        call    serial_putdec
        SERIAL_PRINT "\n"
        addl    (%esi), %esi
        addl    $4, %esi
        jmp     3b

4:      movl    $bss_start, %esi              # the loader zeroes memsz - filesz (the stack aside)
        xorl    %eax, %eax
5:      orl     (%esi), %eax
        addl    $4, %esi
        cmpl    $stack, %esi
        jb      5b
        testl   %eax, %eax
        REPORT  z, "bss zeroed"
        REPORT_SUMMARY

        .data
saved_eax:      .long 0
saved_ebx:      .long 0
saved_eflags:   .long 0
saved_cr0:      .long 0

        .bss
        .balign 4096
bss_start:
        .space  BSS_BYTES - 0x1000
stack:  .space  0x1000
stack_top:
