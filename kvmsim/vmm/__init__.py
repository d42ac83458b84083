"""Userspace VMM layer (kvmtool/QEMU role): run loop, buses, devices, boot setup."""
