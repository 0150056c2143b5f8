"""Physics of the detailed electromagnetic cascade: one module per interaction.

Each module holds the cross-section (numpy, used to build tables once per material) and the compiled
sampling of its final state; none of them knows the detector or the readout. :mod:`.tables` gathers the
per-material tables that the transport loop (:mod:`calogen.sim.cascade`) interpolates.
"""
