"""kvmsim: a runnable model of Linux KVM's VMX exit handling (see DESIGN.md)."""

__version__ = "0.1.0"
