"""Benchmark of Generators: timing plan, published results and the quality-vs-time plane."""
