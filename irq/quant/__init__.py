"""Quantization itself, independent of graphs and backends.

- ``spec``: frozen descriptions of how a tensor or layer is quantized (precision, granularity, ranges);
- ``arith``: scales, zero points, rounding, shared bit for bit by passes, backends and QAT;
- ``histogram`` and ``ranges``: streaming statistics and the range methods (min-max, percentile,
  entropy, MSE);
- ``weight_range``: int8, int4, or int7 weights where x86 kernels would overflow;
- ``hazards``: Concats whose inputs' ranges differ by orders of magnitude.
"""
