"""Developer tools that read irq's own source: ``python -m irq.tools.cycles``."""
