r"""Reference networks: an MLP for low-dimensional data and a small U-Net for images.

Both take `(x, t, y=None)` and return a tensor shaped like `x`, so they plug into
[`ScoreModel`][scoresde.ScoreModel] with any prediction type:

```python
from scoresde import ScoreModel, VPSDE, nets

model = ScoreModel(nets.MLP(dim=2), VPSDE(), prediction="eps")            # 2-D toy data
model = ScoreModel(nets.UNet(in_channels=1, image_size=8), VPSDE())       # 8x8 images
```

* Time enters through a sinusoidal embedding of `time_scale * t` (Vaswani et al. 2017, as in
  DDPM) or random Fourier features (Tancik et al. 2020, as NCSN++), followed by a small MLP.
* Class conditioning (`num_classes=K`) adds a learned label embedding to the time embedding.
  The label `K` is the *null label*: `y=None` or `y == K` means "no condition", so one
  network trained with condition dropout gives both scores of classifier-free guidance
  (Ho & Salimans 2021).
* [`InputScaling`][scoresde.nets.InputScaling] divides the input by its standard deviation
  $\sqrt{\alpha_t^2\sigma_{\text{data}}^2 + \sigma_t^2}$ (Karras et al. 2022's $c_{\text{in}}$), which a
  VE network needs: its inputs range from the data scale to $\sigma_{\max}$.

Tensors are rearranged with einops; output layers start at zero, so an untrained
network predicts 0 (a standard initialisation for diffusion networks).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .sde import check_sde
from ._checks import values_on_host, append_dims, check_int, check_positive_finite

__all__ = [
    "SinusoidalEmbedding",
    "FourierEmbedding",
    "TimeEmbedding",
    "MLP",
    "UNet",
    "ResBlock",
    "AttentionBlock",
    "InputScaling",
]


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _check_time(t: Tensor, batch: int) -> Tensor:
    if not isinstance(t, Tensor):
        t = torch.as_tensor(t, dtype=torch.get_default_dtype())
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t: expected a scalar or shape ({batch},), got shape {tuple(t.shape)}")
    return t


# ---------------------------------------------------------------------- embeddings
class SinusoidalEmbedding(nn.Module):
    r"""$[\cos(s\,t\,\omega_k), \sin(s\,t\,\omega_k)]_{k<d/2}$ with $\omega_k = P^{-k/(d/2)}$.

    Arguments:
        dim: output size (even).
        scale: $s$, multiplies the input; 1000 suits times in $[0, 1]$ (as the DDPM step index).
        max_period: $P$, the longest period, default 10000.

    Reference: Vaswani et al., *Attention Is All You Need*, 2017; Ho et al. 2020.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        dim = check_int("dim", dim, minimum=2)
        if dim % 2:
            raise ValueError(f"dim: expected an even size, got {dim}")
        self.dim = dim
        self.scale = check_positive_finite("scale", scale)
        half = dim // 2
        freqs = torch.exp(-math.log(check_positive_finite("max_period", max_period)) * torch.arange(half) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        args = (self.scale * t.float())[:, None] * self.freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class FourierEmbedding(nn.Module):
    r"""Random Fourier features $[\sin(2\pi W t), \cos(2\pi W t)]$, $W\sim\mathcal N(0, s^2)$ fixed.

    Arguments:
        dim: output size (even).
        scale: $s$, the standard deviation of the frequencies (16 in Song et al. 2021, for
            $\log\sigma$ inputs).

    Reference: Tancik et al., *Fourier Features Let Networks Learn High Frequency
    Functions*, NeurIPS 2020; Song et al. 2021 (NCSN++).
    """

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        dim = check_int("dim", dim, minimum=2)
        if dim % 2:
            raise ValueError(f"dim: expected an even size, got {dim}")
        self.dim = dim
        self.register_buffer("W", torch.randn(dim // 2) * check_positive_finite("scale", scale))

    def forward(self, t: Tensor) -> Tensor:
        args = 2 * math.pi * t.float()[:, None] * self.W[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class _Labelled:
    """Class-conditioning properties of a network whose `embed` is a `TimeEmbedding`."""

    @property
    def num_classes(self) -> int | None:
        return self.embed.num_classes

    @property
    def null_label(self) -> int | None:
        """The unconditional label (`num_classes`), or None."""
        return self.embed.null_label


class TimeEmbedding(nn.Module):
    r"""Time (and optional class) embedding: features of $t$, an MLP, plus a label embedding.

    Arguments:
        dim: output size.
        kind: `"sinusoidal"` or `"fourier"`.
        time_scale: the scale of the sinusoidal (input multiplier) or Fourier (frequency
            spread) features; default 1000 and 16.
        num_classes: number of classes for conditioning, or None. The label `num_classes`
            is the null label.
    """

    def __init__(self, dim: int, kind: str = "sinusoidal", time_scale: float | None = None, num_classes: int | None = None):
        super().__init__()
        dim = check_int("dim", dim, minimum=2)
        feat = dim if dim % 2 == 0 else dim + 1
        if kind == "sinusoidal":
            self.features: nn.Module = SinusoidalEmbedding(feat, scale=1000.0 if time_scale is None else time_scale)
        elif kind == "fourier":
            self.features = FourierEmbedding(feat, scale=16.0 if time_scale is None else time_scale)
        else:
            raise ValueError(f"time_embedding: expected 'sinusoidal' or 'fourier', got {kind!r}")
        self.mlp = nn.Sequential(nn.Linear(feat, dim), nn.SiLU(), nn.Linear(dim, dim))
        if num_classes is not None:
            num_classes = check_int("num_classes", num_classes)
            # One more row for the null label (index num_classes).
            self.label = nn.Embedding(num_classes + 1, dim)
        else:
            self.label = None
        self.num_classes = num_classes

    @property
    def null_label(self) -> int | None:
        """The label that means "unconditional" (`num_classes`), or None without classes."""
        return self.num_classes

    def forward(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.mlp(self.features(t))
        if self.label is None:
            if y is not None:
                raise ValueError("y: this network has no class conditioning (num_classes=None); pass y=None")
            return emb
        B = t.shape[0]
        if y is None:
            y = torch.full((B,), self.num_classes, device=t.device, dtype=torch.long)
        else:
            if not isinstance(y, Tensor):
                y = torch.as_tensor(y, device=t.device)
            if y.is_floating_point() or y.dtype == torch.bool:
                raise TypeError(f"y: expected integer class labels, got dtype {y.dtype}")
            y = y.to(t.device).expand(B) if y.ndim == 0 else y.to(t.device)
            if y.shape != (B,):
                raise ValueError(f"y: expected a label or shape ({B},), got shape {tuple(y.shape)}")
            if values_on_host(y) and bool(((y < 0) | (y > self.num_classes)).any()):
                raise ValueError(
                    f"y: expected labels in [0, {self.num_classes}] ({self.num_classes} is the null label), got {y.tolist()}"
                )
        return emb + self.label(y.long())


# ---------------------------------------------------------------------- MLP
class _MLPBlock(nn.Module):
    def __init__(self, width: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_dim, width)
        self.fc2 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        z = self.fc1(F.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(self.dropout(F.silu(z)))


class MLP(_Labelled, nn.Module):
    r"""A residual MLP with a time embedding, for low-dimensional data `(B, *event)`.

    $h_0 = W_{\text{in}}x$, then `depth` pre-norm residual blocks
    $h \leftarrow h + W_2\,\mathrm{SiLU}(W_1\,\mathrm{SiLU}(\mathrm{LN}(h)) + E\,e(t, y))$,
    then a zero-initialised linear output. Inputs of any event shape are flattened.

    Arguments:
        dim: the data dimension (product of the event shape).
        hidden: the width, default 256.
        depth: the number of residual blocks, default 3.
        emb_dim: the size of the time embedding, default 128.
        time_embedding: `"sinusoidal"` (default) or `"fourier"`.
        time_scale: scale of the time features (see [`TimeEmbedding`][scoresde.nets.TimeEmbedding]).
        num_classes: class conditioning with a null label at index `num_classes`, or None.
        dropout: dropout inside the blocks.

    Call: `net(x, t, y=None)` with `x` `(B, *event)`, `t` `(B,)` or a scalar, `y` integer labels `(B,)`.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        emb_dim: int = 128,
        time_embedding: str = "sinusoidal",
        time_scale: float | None = None,
        num_classes: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.dim = check_int("dim", dim)
        hidden = check_int("hidden", hidden)
        depth = check_int("depth", depth, minimum=0)
        emb_dim = check_int("emb_dim", emb_dim, minimum=2)
        self.embed = TimeEmbedding(emb_dim, time_embedding, time_scale, num_classes)
        self.inp = nn.Linear(self.dim, hidden)
        self.blocks = nn.ModuleList(_MLPBlock(hidden, emb_dim, dropout) for _ in range(depth))
        # No normalisation before the output: in low dimensions the magnitude of x varies from sample
        # to sample and the prediction (eps ~ x at high noise) must scale with it.
        self.out = nn.Sequential(nn.SiLU(), _zero(nn.Linear(hidden, self.dim)))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim < 2 or x[0].numel() != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected shape (B, ...) with {self.dim} values per sample, got {got}")
        t = _check_time(t, x.shape[0]).to(x.device)
        emb = self.embed(t, y)
        h = self.inp(rearrange(x, "b ... -> b (...)"))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).reshape(x.shape)


# ---------------------------------------------------------------------- U-Net
def _norm(channels: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(groups, channels)
    return nn.GroupNorm(g, channels)


class ResBlock(nn.Module):
    r"""DDPM's residual block: $h = \mathrm{Conv}(\mathrm{SiLU}(\mathrm{GN}(x))) + E\,e$;
    $h = \mathrm{Conv}(\mathrm{Drop}(\mathrm{SiLU}(\mathrm{GN}(h))))$; output $\mathrm{skip}(x) + h$.

    Reference: Ho et al. 2020, appendix B (after Wide ResNet).
    """

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int = 8, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = _norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + rearrange(self.emb(F.silu(emb)), "b c -> b c 1 1")
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    r"""Multi-head self-attention over the pixels of a feature map, with a residual connection.

    $x + W_o\,\mathrm{softmax}(QK^\top/\sqrt{d})V$ with $Q, K, V$ from a 1x1 convolution of
    $\mathrm{GN}(x)$ (Ho et al. 2020; Vaswani et al. 2017).
    """

    def __init__(self, channels: int, heads: int = 1, groups: int = 8):
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads: expected a divisor of channels={channels}, got {heads}")
        self.heads = heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three h d) x y -> three b h (x y) d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(out, "b h (x y) d -> b (h d) x y", x=H, y=W))


class UNet(_Labelled, nn.Module):
    r"""A small DDPM-style U-Net for square images of 8x8 to 32x32 pixels.

    Levels at resolutions `image_size / 2**i`, each with `num_res_blocks`
    [`ResBlock`][scoresde.nets.ResBlock]s (GroupNorm, SiLU, time/class embedding) and
    self-attention at the resolutions listed in `attention_resolutions`; a middle of
    ResBlock-attention-ResBlock; a mirrored decoder with skip connections; strided-conv
    downsampling and nearest-neighbour upsampling.

    Arguments:
        in_channels: image channels (1 for grey, 3 for RGB).
        image_size: the side length; must be divisible by `2 ** (len(channel_mults) - 1)`.
        channels: base width, default 64.
        channel_mults: width multipliers per level, default `(1, 2)` (8x8 -> 4x4).
        num_res_blocks: residual blocks per level, default 2.
        attention_resolutions: resolutions (side lengths) with self-attention, default `(4,)`.
        heads: attention heads.
        dropout: dropout in the residual blocks.
        groups: GroupNorm groups (reduced to a divisor of each width).
        emb_dim: size of the time embedding, default `4 * channels`.
        time_embedding, time_scale, num_classes: as [`MLP`][scoresde.nets.MLP].
        out_channels: output channels, default `in_channels`.

    Call: `net(x, t, y=None)` with `x` `(B, in_channels, image_size, image_size)`.

    Reference: Ho, Jain, Abbeel, NeurIPS 2020 (the PixelCNN++-style U-Net, appendix B);
    Ronneberger et al., *U-Net*, 2015.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        channels: int = 64,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (4,),
        heads: int = 1,
        dropout: float = 0.0,
        groups: int = 8,
        emb_dim: int | None = None,
        time_embedding: str = "sinusoidal",
        time_scale: float | None = None,
        num_classes: int | None = None,
        out_channels: int | None = None,
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.image_size = check_int("image_size", image_size)
        channels = check_int("channels", channels)
        mults = tuple(channel_mults)
        if not mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mults):
            raise ValueError(f"channel_mults: expected a non-empty sequence of positive ints, got {channel_mults!r}")
        if image_size % 2 ** (len(mults) - 1):
            raise ValueError(
                f"image_size: expected a multiple of 2**(len(channel_mults) - 1) = {2 ** (len(mults) - 1)}, got {image_size}"
            )
        num_res_blocks = check_int("num_res_blocks", num_res_blocks)
        attn = set(attention_resolutions)
        out_channels = self.in_channels if out_channels is None else check_int("out_channels", out_channels)
        emb_dim = 4 * channels if emb_dim is None else check_int("emb_dim", emb_dim, minimum=2)
        self.embed = TimeEmbedding(emb_dim, time_embedding, time_scale, num_classes)

        def block(cin, cout):
            return ResBlock(cin, cout, emb_dim, groups, dropout)

        self.conv_in = nn.Conv2d(self.in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [channels]
        ch, res = channels, image_size
        for level, m in enumerate(mults):
            for _ in range(num_res_blocks):
                layer = nn.ModuleList([block(ch, channels * m)])
                ch = channels * m
                if res in attn:
                    layer.append(AttentionBlock(ch, heads, groups))
                self.down.append(layer)
                skips.append(ch)
            if level < len(mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList([block(ch, ch), AttentionBlock(ch, heads, groups), block(ch, ch)])
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mults))):
            for _ in range(num_res_blocks + 1):
                layer = nn.ModuleList([block(ch + skips.pop(), channels * m)])
                ch = channels * m
                if res in attn:
                    layer.append(AttentionBlock(ch, heads, groups))
                self.up.append(layer)
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)]))
                res *= 2
        self.out = nn.Sequential(_norm(ch, groups), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1)))

    @staticmethod
    def _run(layer: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for module in layer:
            h = module(h, emb) if isinstance(module, ResBlock) else module(h)
        return h

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected shape (B, {', '.join(map(str, expected))}), got {got}")
        t = _check_time(t, x.shape[0]).to(x.device)
        emb = self.embed(t, y)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = self._run(layer, h, emb)
            hs.append(h)
        h = self._run(self.mid, h, emb)
        for layer in self.up:
            if isinstance(layer[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(layer, h, emb)
        return self.out(h)


# ---------------------------------------------------------------------- preconditioning
class InputScaling(nn.Module):
    r"""Feed a network $x_t / \sqrt{\alpha_t^2\sigma_{\text{data}}^2 + \sigma_t^2}$, the input normalised to unit variance.

    `InputScaling(net, sde, data_std)(x, t, **cond) = net(c_{\text{in}}(t)\,x, t_{\text{in}}, **cond)` with
    $c_{\text{in}}(t) = (\alpha_t^2\sigma_{\text{data}}^2 + \sigma_t^2)^{-1/2}$, exact for data of
    per-coordinate standard deviation $\sigma_{\text{data}}$. It receives the continuous time
    $t$ (use it in a `ScoreModel` without `time_input`); `time_input` maps $t$ to the inner
    network's time input. The prediction type is unchanged.

    Arguments:
        net: the network `net(x, t_in, **cond)`.
        sde: the forward SDE, for $(\alpha_t, \sigma_t)$.
        data_std: $\sigma_{\text{data}}$, default 1.
        time_input: optional map from `t` to the network's time input.

    Reference: Karras, Aittala, Aila, Laine, *Elucidating the Design Space of
    Diffusion-Based Generative Models*, NeurIPS 2022 ($c_{\text{in}}$, table 1).
    """

    def __init__(self, net: nn.Module, sde, data_std: float = 1.0, time_input=None):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net: expected a callable net(x, t, **cond), got {type(net).__name__}")
        check_sde("sde", sde)
        self.net = net
        self.sde = sde
        self.data_std = check_positive_finite("data_std", data_std)
        self.time_input = time_input

    def forward(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        t = _check_time(t, x.shape[0]).to(device=x.device)
        alpha, sigma = self.sde.marginal(t.to(x.dtype))
        c_in = torch.rsqrt(alpha * alpha * self.data_std**2 + sigma * sigma)
        t_in = self.time_input(t) if self.time_input is not None else t
        return self.net(append_dims(c_in, x.ndim) * x, t_in, **cond)

    @property
    def null_label(self) -> int | None:
        return getattr(self.net, "null_label", None)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.net, "num_classes", None)
