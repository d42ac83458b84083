"""Shared between test_kvm_diff.py and conftest's terminal summary: one (scenario, status) per diff."""

KVM_DIFF_SUMMARY: list[tuple[str, str]] = []   # (scenario, MATCH | DIFF | SKIP: why)
