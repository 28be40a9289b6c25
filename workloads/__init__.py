"""Workloads for the harness: servers that log their own ground truth."""
