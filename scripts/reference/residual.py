"""The PyTorch module a spec's `residual(BODY | SHORTCUT)` block stands for.

It defines the naming convention of residual blocks: its two `nn.Sequential`
children are `body` and `shortcut`, so a block at index 3 of the model holds
`3.body.0.weight`, `3.shortcut.1.running_var`, ... in its state_dict.
"""

from torch import nn


class Residual(nn.Module):
    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = nn.Sequential(*shortcut) if shortcut else None

    def forward(self, x):
        return self.body(x) + (self.shortcut(x) if self.shortcut is not None else x)


def example():
    """`conv2d(3,16,k=3,p=1,bias=false),residual(conv2d(16,16,k=3,p=1),relu | conv2d(16,16,k=1))`."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        Residual(
            [nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()],
            [nn.Conv2d(16, 16, 1)],
        ),
    )
