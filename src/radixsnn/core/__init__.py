"""The exact pipeline: ``nn.Module -> trace -> Graph -> QANN -> IntegerSNN (.snn) -> engines``.

================  =====================================================================
``inputs``        pixels in: the float model's normalization, the input integers
``neuron``        the Algorithm-1 radix neuron as pure step functions
``coding``        radix and rate codes (the paper's Table 1)
``quant``         quantizer specs, STE ops, calibration rules
``graph``         the layer graph, synapse maps and the one graph walk
``steps``         time steps per layer and per channel, and the trains' lengths
``trace``         torch.fx tracing of a float model, and the walk that converts it into a graph
``rules``         the conversion rules, one per operation family, in a table users extend
``qann``          the quantized network, calibration, conversion to integers
``snn``           the integer SNN and its safetensors file
``engines``       the spike-by-spike and the one-pass integer engines
``onnx_export``   the integer network as a standard ONNX model; onnxruntime as a third engine
``ops``           every operation count (MACs, synapses, Eq. 24, measured synaptic ops)
``evaluation``    accuracy and exactness of an SNN on labelled images
``convert``       ``quantize`` and ``convert``: the steps above in order
================  =====================================================================

Nothing here knows of training, experiments or the command line.
"""
