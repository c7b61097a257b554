"""The study tool (`study.py`): conformance checks, the study's sweeps, baseline reuse and the child processes."""
