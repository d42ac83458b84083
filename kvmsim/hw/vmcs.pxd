# Cython's view of vmcs.py (augmenting .pxd, compiled path only): the VMCS as an extension type whose
# fields are struct members for compiled callers (every field a Python object).

cdef class Vmcs:
    cdef dict __dict__
    cdef public object vm_exit_reason, exit_qualification, vm_exit_instruction_len
    cdef public object vm_exit_intr_info, vm_exit_intr_error_code, idt_vectoring_info_field
    cdef public object idt_vectoring_error_code, guest_physical_address, guest_linear_address
    cdef public object vm_entry_intr_info_field, vm_entry_exception_error_code
    cdef public object vm_entry_instruction_len, guest_interruptibility_info
    cdef public object guest_pending_dbg_exceptions, guest_dr7, vm_instruction_error
    cdef public object vmx_instruction_info, guest_pml_index, notify_window
    cdef public object cpu_based_vm_exec_control, secondary_vm_exec_control, cr0_guest_host_mask
    cdef public object cr0_read_shadow, cr4_guest_host_mask, cr4_read_shadow, ple_gap, ple_window
    cdef public object vmx_preemption_timer_deadline, tsc_offset
