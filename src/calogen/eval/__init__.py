"""Evaluation of generated showers against a reference sample.

Modules include :mod:`~calogen.eval.histograms` (every CaloChallenge histogram with separation powers and
Wasserstein distances), :mod:`~calogen.eval.separation` (the two distances themselves),
:mod:`~calogen.eval.distances` (FPD/KPD on high-level feature vectors) and
:mod:`~calogen.eval.report` (metrics.json and the HTML report). Nothing is imported here, so
``import calogen.eval`` stays cheap.
"""
