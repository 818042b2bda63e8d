"""CycleGAN-style ResNet generator (Johnson et al. / Zhu et al.) for 2D or 3D.

reflect pad 3 -> conv 7 (ngf) -> norm -> ReLU; `n_downsampling` stride-2 conv3 blocks doubling channels;
`n_blocks` residual blocks (pad, conv3, norm, ReLU, [dropout], pad, conv3, norm, + skip); transposed-conv3
stride-2 up blocks; pad 3 -> conv 7 -> out_act. MONAI has no reflect-padded ResNet generator (and no
reflection-pad factory), so this uses torch's ReflectionPad{2,3}d beside MONAI's Conv/Norm factories.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medgen.errors import ConfigError
from medgen.networks.init import act_layer, check_spatial_dims, is_batch_norm, norm_layer
from medgen.registry import NETWORKS

__all__ = ["ResNetGenerator", "ResidualBlock"]

_PADS = {
    "reflect": {2: nn.ReflectionPad2d, 3: nn.ReflectionPad3d},
    "replicate": {2: nn.ReplicationPad2d, 3: nn.ReplicationPad3d},
}


def _pad_conv(spatial_dims, padding_type, cin, cout, k, bias) -> list[nn.Module]:
    conv = Conv[Conv.CONV, spatial_dims]
    p = (k - 1) // 2
    if padding_type == "zero":
        return [conv(cin, cout, kernel_size=k, padding=p, bias=bias)]
    return [_PADS[padding_type][spatial_dims](p), conv(cin, cout, kernel_size=k, padding=0, bias=bias)]


class ResidualBlock(nn.Module):
    """CycleGAN residual block: x + [pad, conv3, norm, ReLU, (dropout), pad, conv3, norm](x)."""

    def __init__(self, spatial_dims: int, channels: int, norm="instance", dropout: float = 0.0, padding_type="reflect"):
        super().__init__()
        bias = not is_batch_norm(norm)
        layers = _pad_conv(spatial_dims, padding_type, channels, channels, 3, bias)
        layers += [norm_layer(norm, spatial_dims, channels), nn.ReLU(True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += _pad_conv(spatial_dims, padding_type, channels, channels, 3, bias)
        layers.append(norm_layer(norm, spatial_dims, channels))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x)


@NETWORKS.register("resnet_generator")
class ResNetGenerator(nn.Module):
    """CycleGAN ResNet generator. Input sides must be divisible by 2**n_downsampling.

    Args: spatial_dims (2/3), in_channels, out_channels, ngf (64), n_blocks (9; CycleGAN uses 6 at 128 px),
    n_downsampling (2), norm ("instance" as CycleGAN), dropout (0), out_act ("tanh"), padding_type
    ("reflect" | "replicate" | "zero").
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        ngf: int = 64,
        n_blocks: int = 9,
        n_downsampling: int = 2,
        norm="instance",
        dropout: float = 0.0,
        out_act="tanh",
        padding_type: str = "reflect",
    ):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if padding_type not in ("reflect", "replicate", "zero"):
            raise ConfigError(f"padding_type must be reflect, replicate or zero, got {padding_type!r}")
        if n_blocks < 0 or n_downsampling < 0:
            raise ConfigError("n_blocks and n_downsampling must be >= 0")
        self.n_downsampling = n_downsampling
        conv = Conv[Conv.CONV, spatial_dims]
        convt = Conv[Conv.CONVTRANS, spatial_dims]
        bias = not is_batch_norm(norm)

        enc = _pad_conv(spatial_dims, padding_type, in_channels, ngf, 7, bias)
        enc += [norm_layer(norm, spatial_dims, ngf), nn.ReLU(True)]
        for i in range(n_downsampling):
            cin, cout = ngf * 2**i, ngf * 2 ** (i + 1)
            enc += [conv(cin, cout, kernel_size=3, stride=2, padding=1, bias=bias), norm_layer(norm, spatial_dims, cout), nn.ReLU(True)]
        self.encoder = nn.Sequential(*enc)
        width = ngf * 2**n_downsampling
        self.blocks = nn.ModuleList(
            ResidualBlock(spatial_dims, width, norm=norm, dropout=dropout, padding_type=padding_type) for _ in range(n_blocks)
        )
        dec: list[nn.Module] = []
        for i in range(n_downsampling):
            cin = ngf * 2 ** (n_downsampling - i)
            cout = cin // 2
            dec += [
                convt(cin, cout, kernel_size=3, stride=2, padding=1, output_padding=1, bias=bias),
                norm_layer(norm, spatial_dims, cout),
                nn.ReLU(True),
            ]
        dec += _pad_conv(spatial_dims, padding_type, ngf, out_channels, 7, True)
        dec.append(act_layer(out_act))
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Returns the output, or (output, features): the encoder output, then each residual block's output."""
        if not torch.jit.is_tracing() and not torch.jit.is_scripting():
            factor = 2**self.n_downsampling
            if x.dim() != self.spatial_dims + 2 or any(int(s) % factor for s in x.shape[2:]):
                raise ConfigError(
                    f"ResNetGenerator expects (B, C, {self.spatial_dims} spatial dims) with sides divisible by {factor}, "
                    f"got {tuple(x.shape)}"
                )
        h = self.encoder(x)
        feats = [h]
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        out = self.decoder(h)
        return (out, feats) if return_features else out
