"""Built-in baseline models, listed by name in :data:`cellbench.training.baseline.BUILTIN`.

The registry imports a model's module on first use (``get_baseline(name)``); importing this
package registers nothing.

==================  ==========================  ===============================================
registry name       task                        module
==================  ==========================  ===============================================
``resnet18``        classification              :mod:`~cellbench.training.models.resnet`
``resnet50``        classification              :mod:`~cellbench.training.models.resnet`
``unet``            semantic-segmentation       :mod:`~cellbench.training.models.unet`
``unet-regression`` augmented-microscopy        :mod:`~cellbench.training.models.unet`
``maskrcnn``        instance-segmentation       :mod:`~cellbench.training.models.maskrcnn`
``embedding-unet``  instance-segmentation       :mod:`~cellbench.training.models.embedding`
``tracker``         tracking                    :mod:`~cellbench.training.models.tracking`
==================  ==========================  ===============================================
"""

from cellbench.training.models import embedding, maskrcnn, resnet, tracking, unet
from cellbench.training.models.tiling import tiled_predict
from cellbench.training.models.tiny import tiny_config
from cellbench.training.models.tracking import link

__all__ = [
    "embedding",
    "link",
    "maskrcnn",
    "resnet",
    "tiled_predict",
    "tiny_config",
    "tracking",
    "unet",
]
