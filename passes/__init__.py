"""Passes: one transformation or analysis of the irq IR per module."""
