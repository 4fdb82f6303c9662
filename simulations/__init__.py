"""Partition scenarios on the simulated network: ``python -m simulations <scenario>``."""
