"""Devices, process groups and the CPU compatibility layer: the only place that touches Megatron's global state."""
