"""kvm-unit-tests on kvmsim: unittests.cfg (cfg.py), run/skip decisions (decide.py), the tree or
its build (build.py), each test as a scenario (machine.py), verdicts (outcome.py), `kvmsim kut` (run.py)."""
