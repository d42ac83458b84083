"""Model of arch/x86/kvm: x86.c and its parts call the vendor module (vmx.py) only through
kvm_x86_ops (kvm_x86_ops.py), which VM creation installs (kvm_main.py → vmx_init)."""
