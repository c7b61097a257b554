"""Sweeps (`train.py -m`): the launcher that runs each job in a process of its own, and the sweep's summary table."""
