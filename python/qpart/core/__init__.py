"""The model and the world it runs in: the layer profile and cut points of a network
(:mod:`.profile`), the time / energy / server-cost model with its wireless channel
(:mod:`.costs`), the graph split at a partition point with the activation round trip
(:mod:`.split`), and agreement metrics (:mod:`.metrics`). Imports ``qpart_kernels`` only."""
