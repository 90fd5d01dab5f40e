"""Niyanta: the public SDK a workload author imports."""
