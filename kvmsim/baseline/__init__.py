"""Baselines for `kvmsim bench` on the real /dev/kvm: the same guest loop run by a small C VMM
(cvmm.c, built here with the system compiler) and by a minimal Python ctypes loop (minloop.py).

Not a kernel model: yardsticks.  Both start from the boot state kvmsim's own VMM set up on a
kvm-backend machine (state.py), so the three runs differ only in the run loop.
"""
