"""radixsnn: radix-encoded spiking neural networks (Wang et al.), exact to their quantized networks.

A trained CNN becomes a radix SNN in three steps -- quantize (trace the model into a QANN),
calibrate, convert to integers -- and the SNN runs on two engines that give the QANN's logits bit
for bit:

>>> import torch, radixsnn as rs
>>> model = torch.nn.Sequential(
...     torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
>>> images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
>>> qann = rs.quantize(model, time_steps=4, input_shape=(3, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
>>> qann.calibrate(images, progress=False)
>>> snn = qann.to_snn()
>>> spikes = rs.run(snn, images)                      # every time step of every neuron
>>> torch.equal(spikes.logits, qann.integer_logits(images)), torch.equal(spikes.logits, rs.run(snn, images, engine="integer").logits)
(True, True)

Registered models carry their input normalization, so for them ``mean`` and ``std`` can be left out
(``rs.convert(rs.create_model("resnet20", weights="resnet20-12fca82f.th"), train_images, time_steps=4)``).
The package layout: :mod:`radixsnn.core` (the exact pipeline), :mod:`radixsnn.models`,
:mod:`radixsnn.data`, :mod:`radixsnn.training`, :mod:`radixsnn.experiments`, :mod:`radixsnn.cli`.
"""
from radixsnn import data
from radixsnn.core.convert import convert, quantize
from radixsnn.core.engines import EngineResult, run
from radixsnn.core.evaluation import evaluate
from radixsnn.core.onnx_export import export_onnx
from radixsnn.core.qann import QANN
from radixsnn.core.rules import register_rule, unregister_rule
from radixsnn.core.snn import IntegerSNN, load
from radixsnn.errors import ConfigError, ConversionError, DataError, RadixSNNError, SNNFileError
from radixsnn.models import create_model, list_models
from radixsnn.version import __version__

__all__ = [
    "ConfigError",
    "ConversionError",
    "DataError",
    "EngineResult",
    "IntegerSNN",
    "QANN",
    "RadixSNNError",
    "SNNFileError",
    "__version__",
    "convert",
    "create_model",
    "data",
    "evaluate",
    "export_onnx",
    "list_models",
    "load",
    "quantize",
    "register_rule",
    "run",
    "unregister_rule",
]
