"""Sensitivity analysis and mixed precision under an accuracy budget.

``analyze_sensitivity`` scores every layer (quantized alone, and left out of an otherwise
quantized model) from one calibration; ``search_mixed_precision`` keeps the fewest layers in
higher precision so that the lowered artifact meets a budget; ``irq sensitivity`` and
``irq compile --budget/--min-agreement/--min-metric`` are their command-line faces.
"""
