"""A user's own vision model, as the registry's ``source: python`` loads it (see config/models.yaml,
entry ``user_cnn``, and the README's "Adding a model").

The registry names the function (``architecture: config/user_models.py:small_cnn``, relative to the
workflow's directory); it returns an ``nn.Module``, or ``(module, transform)`` with a transform from a
PIL image to a tensor. The features job reads the module's ``blocks`` (its block container), or the
modules the entry's ``layers:`` names; ``weights:`` is ``random`` (this function's initialisation,
seeded by the entry's ``seed``) or a state-dict file.
"""

from torch import nn


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class SmallCNN(nn.Module):
    """Four stride-2 convolution stages (16, 32, 64, 128 channels) and a linear head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        widths = (3, 16, 32, 64, 128)
        self.blocks = nn.Sequential(*(_stage(a, b) for a, b in zip(widths, widths[1:], strict=False)))
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        return self.head(self.blocks(x).mean(dim=(2, 3)))


def small_cnn() -> nn.Module:
    return SmallCNN()
