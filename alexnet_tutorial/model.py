"""The AlexNet-style network for 28x28 MNIST digits (chapter "The model").

The layout and the names (``layer1``..``layer5``, ``fc1``..``fc3``) follow the original
write-up so that the errata can point at them; every bug listed there is fixed here.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

CONV_LAYERS = ("layer1", "layer2", "layer3", "layer4", "layer5")  # the names of AlexNet's conv layers


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run the block with ``model`` in eval mode (dropout off), then put back the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _width(channels: int, width_mult: float) -> int:
    """Scale a channel count by ``width_mult``, never below one channel."""
    return max(1, round(channels * width_mult))


class AlexNet(nn.Module):
    """Five 3x3 conv layers and three fully connected layers, for 1x28x28 inputs.

    ``width_mult`` scales every conv and hidden width (the original accepted it and
    ignored it); ``dropout`` is the drop probability before ``fc1`` and ``fc2``.
    """

    def __init__(self, width_mult: float = 1.0, dropout: float = 0.5, num_classes: int = 10):
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.width_mult = float(width_mult)
        c1, c2, c3, c4, c5 = (_width(c, width_mult) for c in (32, 64, 128, 256, 256))
        h1, h2 = _width(1024, width_mult), _width(512, width_mult)

        # Pooling before ReLU, as in the original: the two commute (ReLU never changes
        # which value is largest), and the ReLU then touches a quarter of the values.
        self.layer1 = nn.Sequential(  # 1x28x28 -> c1x14x14
            nn.Conv2d(1, c1, kernel_size=3, padding=1),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.ReLU(inplace=True),
        )
        self.layer2 = nn.Sequential(  # c1x14x14 -> c2x7x7
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.ReLU(inplace=True),
        )
        self.layer3 = nn.Sequential(  # c2x7x7 -> c3x7x7 (the original had no ReLU here)
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.layer4 = nn.Sequential(  # c3x7x7 -> c4x7x7 (nor here)
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.layer5 = nn.Sequential(  # c4x7x7 -> c5x3x3
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
        )
        # The classifier: dropout and a ReLU between the linear layers, so that the three
        # of them no longer collapse into a single linear map.
        self.fc1 = nn.Sequential(nn.Dropout(dropout), nn.Linear(c5 * 3 * 3, h1), nn.ReLU(inplace=True))
        self.fc2 = nn.Sequential(nn.Dropout(dropout), nn.Linear(h1, h2), nn.ReLU(inplace=True))
        self.fc3 = nn.Linear(h2, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) initialisation for ReLU layers and zero biases.

        PyTorch's default initialisation shrinks the signal layer by layer in a deep ReLU
        stack without batch norm; this net then sits at chance level for its first few
        hundred steps. He initialisation keeps the signal's scale, so training starts at once.
        """
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module is not self.fc3:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        # The output layer feeds softmax, not a ReLU: small weights give near-uniform
        # first predictions (loss close to ln 10).
        nn.init.normal_(self.fc3.weight, std=0.01)
        nn.init.zeros_(self.fc3.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The five conv layers: N x 1 x 28 x 28 -> N x c5 x 3 x 3."""
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4, self.layer5):
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N x 10) for a batch of normalised N x 1 x 28 x 28 images."""
        # flatten, not view: view fails on channels_last (non-contiguous) tensors.
        x = torch.flatten(self.features(x), 1)
        return self.fc3(self.fc2(self.fc1(x)))


def layer_table(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> list[dict]:
    """Each top-level layer's output shape and parameter count, computed by a forward pass.

    The original wrote the shapes as comments; here they cannot go stale.
    """
    rows: list[dict] = []
    hooks = []
    for name, module in model.named_children():
        def record(mod, _inputs, output, name=name):
            rows.append({
                "layer": name,
                "output_shape": tuple(output.shape[1:]),
                "params": sum(p.numel() for p in mod.parameters()),
            })
        hooks.append(module.register_forward_hook(record))
    try:
        with eval_mode(model), torch.no_grad():
            param = next(model.parameters())
            model(torch.zeros(input_shape, device=param.device, dtype=param.dtype))
    finally:
        for hook in hooks:
            hook.remove()
    return rows


@torch.no_grad()
def feature_maps(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each conv layer's output for a batch of images, on the CPU: ``{"layer1": N x C x H x W, ...}``
    (the feature maps that chapter "The model" draws)."""
    with eval_mode(model):
        param = next(model.parameters())
        x = images.to(param.device, param.dtype)
        maps = {}
        for name in CONV_LAYERS:
            x = getattr(model, name)(x)
            maps[name] = x.float().cpu()
    return maps


def parameter_count(width_mult: float = 1.0) -> int:
    """The number of parameters of ``AlexNet(width_mult)``, counted without allocating them
    (the network is built on PyTorch's meta device, which holds shapes only)."""
    with torch.device("meta"):
        return sum(p.numel() for p in AlexNet(width_mult=width_mult).parameters())


def summary(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> str:
    """A printable table of :func:`layer_table`, with the total parameter count."""
    rows = layer_table(model, input_shape)
    lines = [f"{'layer':<8}{'output shape':<18}{'parameters':>12}"]
    for row in rows:
        shape = " x ".join(str(d) for d in row["output_shape"])
        lines.append(f"{row['layer']:<8}{shape:<18}{row['params']:>12,}")
    total = sum(p.numel() for p in model.parameters())
    lines.append(f"{'total':<26}{total:>12,}")
    return "\n".join(lines)
