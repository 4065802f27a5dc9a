"""Model zoo: a registry of CIFAR architectures, each with the configuration of its input.

``create_model(name)`` builds a registered network and attaches its :class:`ModelConfig` (input
normalization, input shape, number of classes), which :func:`radixsnn.quantize` reads; ``weights=``
loads a checkpoint in any layout :func:`~radixsnn.models.weights.read_state_dict` knows. Every model is
a plain ``nn.Module`` that torch.fx can trace, so the converter can read its graph. :func:`load_model`
also takes models from outside the registry (``package.module:callable``, ``path/file.py:callable``).

>>> from radixsnn.models import create_model, list_models, model_config
>>> "resnet20" in list_models()
True
>>> model = create_model("resnet20", num_classes=100)
>>> model.linear.out_features, model_config("resnet20").mean
(100, (0.485, 0.456, 0.406))
"""
from radixsnn.models import mobilenet, resnet18, resnet_cifar, resnet_cifar_b, vgg  # noqa: F401  (fill the registry)
from radixsnn.models.loader import load_model
from radixsnn.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    create_model,
    list_models,
    model_config,
    register_model,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ModelConfig", "create_model", "list_models", "load_model", "model_config",
           "register_model"]
