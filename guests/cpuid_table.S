# cpuid_table.S — CPUID against a table the VMM replaced (kvm.cpuid: {replace: true}): each
# (leaf, subleaf) of `queries` is asked once and its EAX EBX ECX EDX stored, 16 bytes a query,
# at RESULTS (0x90000).  GNU as, AT&T.  Modes: prot32, long64.  Ends with EXIT 0.
        .include "kvmsim.inc"

RESULTS = 0x90000

        GUEST_ENTRY
        movl    $queries, %esi
        movl    $RESULTS, %edi
1:      cmpl    $queries_end, %esi
        je      2f
        movl    (%esi), %eax
        movl    4(%esi), %ecx
        cpuid
        movl    %eax, (%edi)
        movl    %ebx, 4(%edi)
        movl    %ecx, 8(%edi)
        movl    %edx, 12(%edi)
        addl    $8, %esi
        addl    $16, %edi
        jmp     1b
2:      EXIT    0

        .data
        .balign 8
queries:
        .long   0x0, 0                  # in the table
        .long   0x4, 0                  # indexed leaf: each subleaf its own entry
        .long   0x4, 1
        .long   0x4, 5                  # indexed, subleaf absent, leaf in range: zeros
        .long   0x2, 9                  # not indexed: any ECX finds it
        .long   0x5, 0                  # absent, in range: zeros
        .long   0xb, 0                  # topology leaf, in the table
        .long   0xb, 3                  # topology subleaf absent: ECX = CL, EDX from subleaf 1
        .long   0x14, 0                 # above the max basic leaf (0xb): the max basic leaf's entry
        .long   0x20, 6                 # ... whose subleaf 6 is absent: the 0xb rule again
        .long   0x40000000, 0           # hypervisor class absent: the max basic leaf
        .long   0x80000000, 0           # extended class max leaf, in the table
        .long   0x80000008, 0           # above the extended max (0x80000001): the max basic leaf
queries_end:
