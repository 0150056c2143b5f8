"""Adapters to simulation frameworks, built on calogen's public API only.

* :mod:`calogen.integrations.par04` — Geant4's Par04 example: its input vector and its cell order
  (r -> phi -> z), and the permutation to and from calogen's CaloChallenge order (z -> alpha -> r).
* :mod:`calogen.integrations.par04_graph` — a model as one ONNX graph with Par04's conventions
  (``calogen export MODEL --format par04``); needs torch and onnx.
* :mod:`calogen.integrations.ddml` — key4hep DDML's embedded-Python inference contract,
  ``run_inference(inputs: list[np.ndarray]) -> np.ndarray`` (flat float32).

Nothing here is imported by ``import calogen``.
"""

from __future__ import annotations

__all__: list[str] = []
