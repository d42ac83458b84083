"""The local APIC's architectural addresses (the kernel's asm/apicdef.h and MSR_IA32_APICBASE bits),
named once for the silicon, KVM's model and the tools."""

APIC_DEFAULT_PHYS_BASE = 0xFEE00000          # the xAPIC page after reset: an MMIO hole, never RAM
MSR_IA32_APICBASE_BSP = 1 << 8
MSR_IA32_APICBASE_ENABLE = 1 << 11
# MSR_IA32_APICBASE after reset: the default base, enabled, on the bootstrap processor.
APIC_BASE_RESET = APIC_DEFAULT_PHYS_BASE | MSR_IA32_APICBASE_ENABLE | MSR_IA32_APICBASE_BSP
