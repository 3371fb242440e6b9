"""The model and the world it runs in: the capture of a model as a graph over the supported
operator set (:mod:`.capture`, :mod:`.graph_ops`), the layer profile and cut points of a
network (:mod:`.profile`), the time / energy / server-cost model with its wireless channel
(:mod:`.costs`), the graph split at a partition point with the activation round trip
(:mod:`.split`), and agreement metrics (:mod:`.metrics`). Imports ``qpart_kernels`` only."""
