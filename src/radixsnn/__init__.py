"""radixsnn: radix-encoded spiking neural networks (Wang et al.), exact to their quantized networks."""

__version__ = "0.1.0"
