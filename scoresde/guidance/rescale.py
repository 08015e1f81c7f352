r"""Guidance rescale (Lin et al. 2024): the guided prediction's spread matched to the conditional's."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batched, check_float_tensor
from ._checks import _finite_number

#: Where guidance rescale may be applied (any parameterisation but the score itself works).
RESCALE_SPACES = ("x0", "eps", "v", "score")


def rescale_guidance(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    r"""Guidance rescale (Lin et al. 2024, section 3.4): match the guided prediction's std to the conditional's.

    $$x_{\text{rescaled}} = x_{\text{cfg}}\,\frac{\operatorname{std}(x_{\text{pos}})}{\operatorname{std}(x_{\text{cfg}})},\qquad
    x_{\text{final}} = \phi\,x_{\text{rescaled}} + (1-\phi)\,x_{\text{cfg}},$$

    with the standard deviation taken per sample over all non-batch dimensions. A guided
    prediction with zero spread is left as it is.

    Arguments:
        guided: the classifier-free guided prediction $x_{\text{cfg}}$, `(B, ...)` with at least one event dimension.
        cond: the conditional ("positive") prediction $x_{\text{pos}}$, shaped like `guided`.
        phi: the rescale weight in $[0, 1]$; the paper uses 0.7.

    Returns:
        $x_{\text{final}}$, shaped like `guided`.

    Reference: Lin, Liu, Li, Yang, *Common Diffusion Noise Schedules and Sample Steps are
    Flawed*, WACV 2024, section 3.4, Algorithm 2.
    """
    check_batched("guided", guided)
    check_float_tensor("cond", cond)
    if cond.shape != guided.shape:
        raise ValueError(f"cond: expected the shape of guided, {tuple(guided.shape)}, got {tuple(cond.shape)}")
    if guided.ndim < 2:
        raise ValueError(
            f"guided: expected (B, ...) with at least one event dimension to take a per-sample std, got shape {tuple(guided.shape)}"
        )
    phi = _check_rescale(phi)
    return _rescale(guided, cond, phi)


def _rescale(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    dims = tuple(range(1, guided.ndim))
    std_cond = cond.std(dim=dims, correction=0, keepdim=True)
    std_cfg = guided.std(dim=dims, correction=0, keepdim=True)
    ratio = torch.where(std_cfg > 0, std_cond / torch.where(std_cfg > 0, std_cfg, 1.0), 1.0)
    return guided * (phi * ratio + (1.0 - phi))




def _check_rescale(rescale) -> float:
    rescale = _finite_number("rescale", rescale)
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"rescale: expected phi in [0, 1], got {rescale!r}")
    return rescale
