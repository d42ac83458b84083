# undecodable_then_out.S — byte sequences a disassembler may not decode (or decodes unlike the
# CPU), each followed by an OUT: every OUT must still exit, and 8F /5 and 8F /7 (POP with a
# reg field other than 0) raise #UD to the guest's handler.  GNU as, AT&T syntax.
# Modes: real16, prot32, long64.
#
# Where the sequences run:
#   long64 (default): at CPL3, IOPL 0, the serial and debug-exit ports allowed by the TSS I/O
#     bitmap.  Reason: on kvm_pvm every CPL0 instruction goes through KVM's emulator, which
#     knows none of these encodings (each one, even the 0F 1E hint NOP, ends in
#     KVM_INTERNAL_ERROR_EMULATION there), while CPL3 code runs on the silicon as on VMX
#     hardware.  (kvm_pvm also ignores IOPL 3 at CPL3: OUT raises #GP, hence the bitmap.)  At
#     CPL3 the F4 (HLT) after a sequence is #GP(0) for the guest (privileged; VMX does not
#     intercept #GP), which still shows that the decoder stayed in step.
#   real16, prot32, or long64 with CPL0=1 (--defsym): at CPL0, as VMX hardware runs them
#     natively (sim only, see above: kvm_pvm's emulator cannot, and it cannot reach CPL3 from
#     prot32 either: its IRET/far RET do not change privilege outside 64-bit PVM); the run ends
#     with the last sequence's HLT, a KVM_EXIT_HLT.
# Cases, in order; each "OUT c" is `movb $c, %al; movw $0x3f8, %dx; outb %al, %dx`, an I/O exit
# writing c to the serial port (so `serial` shows which ran):
#   dd c9        fxch alias (FXCH4, undocumented)        no fault, OUT 'A'
#   dd c9 f4     the alias, then HLT                      CPL3: #GP; OUT 'B'
#   8f ee        POP /5, mod 3 (AMD: XOP map 14, invalid) #UD, OUT 'C'; then f4 (CPL3: #GP)
#   8f fc        POP /7, mod 3 (AMD: XOP map 28, invalid) #UD, OUT 'D'; then f4 (CPL3: #GP)
#   8f 6d 00     POP /5, memory operand (AMD: XOP map 13) #UD, OUT 'E'
#   0f 1e c0     hint NOP, register form                  no fault, OUT 'F'
#   0f 1e 00     hint NOP, memory form (no access)        no fault, OUT 'G'
#   df d0        FSTP alias (FSTP8)                       no fault, OUT 'H'
#   dc d1        FCOM alias (FCOM2)                       no fault, OUT 'I'
# then the REPORT lines for the faults, and the end:
#   CPL3: "SUMMARY: 6 tests, 0 failures", debug-exit 0 (OUT 0xf4 from CPL3)
#   CPL0: 3 PASS lines (the #UDs), "halting", then dd c9, OUT 'Z', HLT -> KVM_EXIT_HLT (the
#         issue's reproducer; no SUMMARY, as the HLT ends the run)
# 8F with ModRM.reg != 0 is #UD on Intel; on AMD it is an XOP prefix when the low 5 bits of the
# next byte are >= 8, and every map used here is invalid, so #UD there too: one expectation
# holds on both vendors.  The map-8 form (8f 28 ...) is avoided: it is a real XOP instruction on AMD.

        .include "kvmsim.inc"

.ifndef CPL0
CPL0 = 1 - KVMSIM_MODE_LONG64
.endif
.if CPL0 == 0 && KVMSIM_MODE_LONG64 == 0
        .error  "the CPL3 form is long64 only"
.endif

.macro OUTC c
        movb    $(\c), %al
        movw    $0x3f8, %dx
        outb    %al, %dx
.endm

# The F4 that follows a sequence: #GP at CPL3; at CPL0 it would halt the run, so it is left out.
.macro F4_AT_CPL3 msg
.if CPL0 == 0
        EXPECT_FAULT GP_VECTOR, hlt
        REPORT  e, "\msg"
.endif
.endm

.macro POP_UD msg, bytes:vararg
        EXPECT_FAULT UD_VECTOR, .byte \bytes
        REPORT  e, "\msg"
.endm


        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        fninit
.if CPL0 == 0
        # TSS: RSP0, the I/O bitmap (only the 16550 at 0x3f8-0x3ff and the debug-exit port
        # 0xf4-0xf7 allowed), our GDT with ring-3 segments, LTR, U on the first 2 MiB, IRETQ.
        CPL3_IOMAP_DENY_ALL
        movb    $0, TSS + IOMAP + KVMSIM_SERIAL_PORT/8
        andb    $0x0f, TSS + IOMAP + KVMSIM_EXIT_PORT/8
        CPL3_ENTER user
.endif

user:
        .byte   0xdd, 0xc9                      # fxch alias
        OUTC    'A'
        .byte   0xdd, 0xc9
        F4_AT_CPL3 "dd c9 f4: the HLT after the fxch alias is decoded"
        OUTC    'B'
        POP_UD  "8f ee (POP /5, mod 3) raises #UD", 0x8f, 0xee
        OUTC    'C'
        F4_AT_CPL3 "8f ee f4: the HLT after it is decoded"
        POP_UD  "8f fc (POP /7, mod 3) raises #UD", 0x8f, 0xfc
        OUTC    'D'
        F4_AT_CPL3 "8f fc f4: the HLT after it is decoded"
        POP_UD  "8f 6d 00 (POP /5, memory) raises #UD", 0x8f, 0x6d, 0x00
        OUTC    'E'
        .byte   0x0f, 0x1e, 0xc0                # hint NOP
        OUTC    'F'
        .byte   0x0f, 0x1e, 0x00                # hint NOP, memory form (nothing accessed)
        OUTC    'G'
        .byte   0xdf, 0xd0                      # fstp alias
        OUTC    'H'
        .byte   0xdc, 0xd1                      # fcom alias
        OUTC    'I'
        SERIAL_PRINT "\n"
.if CPL0 == 0
        REPORT_SUMMARY
.else
        SERIAL_PRINT "halting\n"
        .byte   0xdd, 0xc9
        movb    $0x5a, %al
        movw    $0x3f8, %dx
        outb    %al, %dx
        hlt
.endif

.if CPL0 == 0
        .data
        CPL3_GDT
.endif
