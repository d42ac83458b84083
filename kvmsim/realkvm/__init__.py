"""The uapi surface backed by the real /dev/kvm: the oracle for differential checks (DESIGN.md).

Modules: `ioctls` (kvm.h ioctl numbers via _IO/_IOR/_IOW/_IOWR, argument structs, KVM_CAP_*),
`backend` (`RealKvm`, `RealVm` (uapi.VmFd), `RealVcpu` (uapi.VcpuFd), `RealEventFd`),
`probe` (`kvm_available()`), `tracefs` (`open_trace()` → kvm:* tracepoints of our own runs),
`hostevents` (those tracepoints summarised into RunResult.host_events for `run --backend kvm`).
The sim-vs-kvm comparison itself is kvmsim/scenario/differential.py, with the differences only the
host's vendor module explains in kvmsim/scenario/vendor.py; the /dev/kvm round-trip figures of
`make bench` are in kvmsim/bench.py.

Every KVM_RUN is wall-time bounded: `RealVcpu.run_timeout` (default 5 s) arms a watchdog
thread that sets kvm_run.immediate_exit and sends SIGUSR2 to the vCPU thread; run() then
returns -EINTR (exit_reason KVM_EXIT_INTR) with `vcpu.timed_out` set.

Host facts (kvm_pvm, AMD EPYC, Linux 6.18.44; pinned by tests/realkvm/test_realkvm_host_facts.py)
--------------------------------------------------------------------------------------------
kvm_pvm is a *paravirtual* KVM vendor module (no VMX/SVM for our guest).  A guest that is not
PVM-aware has all of its supervisor code run by KVM's x86 emulator, one instruction per
`kvm_emulate_insn`, and no `kvm_exit`/`kvm_entry` events are ever emitted.  So this host is an
oracle for *emulator* semantics and for what userspace sees in kvm_run, but NOT for VMX exit
reasons, exit qualifications or how often the emulator runs on Intel hardware.

- Real mode (reset state, CS=0, IP=0x1000), prot32 (flat GDT, CR0.PE via SET_SREGS) and long64
  (identity paging, EFER.LME|LMA, CR0.PG, CR4.PAE) all run; OUT/IN exit as KVM_EXIT_IO
  (data_offset 4096), HLT as KVM_EXIT_HLT with RIP past the HLT (no in-kernel irqchip).
- OUT: RIP is already past the OUT when the exit reaches userspace (emulated OUT retires
  first; VMX fast PIO would leave RIP at the OUT).  IN: RIP at the IN until the next KVM_RUN.
- Every instruction is emulated: a 1000-iteration loop gives 2002 kvm_emulate_insn events,
  modes `real`, `prot32`, `prot64`.
- MMIO read: KVM_EXIT_MMIO with RIP at the instruction (kvm_mmio unsatisfied-read, then read
  after KVM_RUN); write: RIP already past it.  A 4-byte access crossing a page: two 2-byte
  exits (both for reads and writes).  16-byte SSE movdqu: two 8-byte exits.
- rep insb: count 1024 per exit (the emulator's read cache), remainder last, RIP at the
  instruction; rep insd count 3 size 4; rep outsb: one exit per byte (count 1).
- CPUID: handled in the kernel, no exit.  RDMSR of an unknown MSR: #GP(0) injected (handler
  runs; with no IDT: KVM_EXIT_SHUTDOWN).  With KVM_CAP_X86_USER_SPACE_MSR (UNKNOWN|INVAL):
  KVM_EXIT_X86_RDMSR / _WRMSR, reason UNKNOWN (2), RIP at the instruction; msr.data answered.
- VMCALL / VMMCALL from a plain guest livelock: the emulator patches VMMCALL to VMCALL
  (0f 01 c1) and re-executes it forever; KVM_RUN returns only when signalled (the watchdog
  matters); RAX is never set to -KVM_ENOSYS.
- ud2 with no IDT → KVM_EXIT_SHUTDOWN (triple fault).  int3 in long mode → the emulator cannot
  deliver INTn outside real mode: KVM_EXIT_INTERNAL_ERROR suberror 1.
- AVX vmovdqu from MMIO → KVM_EXIT_INTERNAL_ERROR, suberror 1 (EMULATION), ndata 8: flags=1
  (INSTRUCTION_BYTES), insn_size 15 + 15 fetched bytes, then get_exit_info's 5 words
  (reason 0x1000, 0, 0, 0, 0); no last_vmentry_cpu word.  RIP at the instruction.
- ioeventfd: MMIO len 0 (any length) and len 4, and PIO, complete without a userspace exit
  (eventfd counts 1 each); a 2-byte write to a len-4 ioeventfd is a normal KVM_EXIT_MMIO.
  No kvm_fast_mmio event (no EPT misconfig here: the write goes through the emulator).
- Coalesced MMIO: writes into a registered zone never exit; they appear in the ring
  (mapping page 2) in order, with their lengths (4, then 1).
- KVM_NMI: delivered through the IDT (vector 2) before the next instruction; iretq returns.
- immediate_exit=1: KVM_RUN returns -EINTR without entering; exit_reason is left untouched.
- tracefs: not mounted at boot but mountable (root); all kvm:* events exist.  We use a private
  instance filtered to our pid, and leave /sys/kernel/tracing mounted but idle.
- Capabilities: KVM_CAP_NR_VCPUS 2, COALESCED_MMIO (page 2), IOEVENTFD(_ANY_LENGTH),
  IMMEDIATE_EXIT, X86_USER_SPACE_MSR, X86_MSR_FILTER, EXIT_ON_EMULATION_FAILURE all present;
  vCPU mmap size 3 pages.  kvm.mmio_caching=N, kvm.force_emulation_prefix=0.
"""
