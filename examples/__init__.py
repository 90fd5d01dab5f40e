"""Example workloads for Niyanta; importing a module registers its workload types."""
