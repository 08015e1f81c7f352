r"""Training a noisy classifier for classifier guidance: the cross-entropy on noised data and a small loop.

A classifier $p_\phi(y\mid x_t, t)$ trained with the cross-entropy on $x_t = \alpha_t x_0 + \sigma_t\varepsilon$
at times drawn uniformly has the exact noisy classifier $p_t(y\mid x_t)$ as its minimiser,
which is what [`classifier_guided_score`][scoresde.guidance.classifier_guided_score] needs.

Reference: Dhariwal & Nichol, *Diffusion Models Beat GANs on Image Synthesis*, NeurIPS 2021, section 4.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from solvers._utils import as_real

from ._checks import as_time, check_batched, check_int
from .sde import SDE, check_sde

__all__ = ["noisy_classifier_loss", "train_noisy_classifier"]


def check_labels(y, B: int, device) -> Tensor:
    """Integer labels `y` (an int or a `(B,)` tensor) as a `(B,)` long tensor, or a clear error."""
    if isinstance(y, bool):
        raise TypeError(f"y: expected an int label or an integer tensor of labels, got {y!r}")
    y = torch.as_tensor(y, device=device)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y: expected integer labels, got dtype {y.dtype}")
    if y.ndim > 1 or (y.ndim == 1 and y.shape[0] != B):
        raise ValueError(f"y: expected a label or a ({B},) tensor of labels to match the batch of x, got shape {tuple(y.shape)}")
    return y.long().expand(B)


def classifier_logits(classifier, x: Tensor, t_in: Tensor) -> Tensor:
    """`classifier(x, t_in)`, checked to be logits of shape `(B, num_classes)`."""
    logits = classifier(x, t_in)
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"classifier: expected logits of shape ({x.shape[0]}, num_classes), got {got}")
    return logits


def noisy_classifier_loss(
    classifier: Callable[[Tensor, Tensor], Tensor],
    sde: SDE,
    x0: Tensor,
    y: Tensor,
    *,
    t: Tensor | None = None,
    t_min: float = 0.0,
    generator: torch.Generator | None = None,
    time_input: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    r"""Cross-entropy of a time-conditioned classifier on noised data, $E_{t, x_t}\big[-\log p_\phi(y\mid x_t, t)\big]$.

    Draws $t \sim \mathcal U[t_{\min}, T]$ (unless given) and $x_t = \alpha_t x_0 + \sigma_t\varepsilon$
    from the SDE's transition kernel; the minimiser over all classifiers is the exact noisy
    classifier $p_t(y\mid x_t)$ that guidance needs (Dhariwal & Nichol 2021 train theirs this
    way, on the diffusion's own noise distribution).

    Arguments:
        classifier: `classifier(x_t, t_in) -> logits (B, num_classes)`.
        sde: the forward SDE.
        x0: clean data `(B, ...)`.
        y: integer labels `(B,)`.
        t: optional times `(B,)`; drawn uniformly in $[t_{\min}, T]$ when omitted.
        t_min: the smallest time drawn.
        generator: source of $t$ and $\varepsilon$.
        time_input: optional map from `t` to the classifier's time input.

    Returns:
        The mean cross-entropy (a 0-d tensor, differentiable in the classifier's parameters).
    """
    if not callable(classifier):
        raise TypeError(f"classifier: expected a callable classifier(x, t), got {type(classifier).__name__}")
    check_sde("sde", sde)
    x0 = check_batched("x0", x0)
    B = x0.shape[0]
    if not isinstance(y, Tensor):
        raise TypeError(f"y: expected a ({B},) integer tensor of labels, got {type(y).__name__}")
    if y.shape != (B,):
        raise ValueError(f"y: expected a ({B},) tensor of labels to match the batch of x0, got shape {tuple(y.shape)}")
    y = check_labels(y, B, x0.device)
    t_min = as_real("t_min", t_min)
    if not 0.0 <= t_min < sde.T:
        raise ValueError(f"t_min: expected a time in [0, T) = [0, {sde.T}), got {t_min!r}")
    if t is None:
        u = torch.rand(B, generator=generator, device=x0.device, dtype=x0.dtype)
        t = t_min + (sde.T - t_min) * u
    else:
        t = as_time(t, like=x0, T=sde.T)
        t = t.expand(B) if t.ndim == 0 else t
    x_t = sde.perturb(x0, t, generator=generator)
    logits = classifier_logits(classifier, x_t, time_input(t) if time_input is not None else t)
    return torch.nn.functional.cross_entropy(logits, y)


def train_noisy_classifier(
    classifier: nn.Module,
    sde: SDE,
    data: Callable[[], tuple[Tensor, Tensor]] | Iterable[tuple[Tensor, Tensor]],
    *,
    steps: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    t_min: float = 0.0,
    generator: torch.Generator | None = None,
    time_input: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    r"""Train a time-conditioned classifier on noised data with [`noisy_classifier_loss`][scoresde.guidance.noisy_classifier_loss].

    Each step draws a batch $(x_0, y)$, noises it at uniform random times and takes one
    optimizer step on the cross-entropy. The classifier is left in the mode it came in.

    Arguments:
        classifier: an `nn.Module`, `classifier(x_t, t_in) -> logits (B, num_classes)`.
        sde: the forward SDE whose noise the classifier must see through.
        data: a callable returning one batch `(x0, y)` per call, or an iterable of batches.
        steps: the number of optimizer steps (required for a callable; for an iterable, at
            most this many, all of it when omitted).
        optimizer: defaults to Adam with learning rate `lr` over the classifier's parameters.
        lr: learning rate of the default optimizer.
        t_min: the smallest time drawn.
        generator: source of times and noise.
        time_input: optional map from `t` to the classifier's time input.

    Returns:
        The loss of every step, a `(steps,)` tensor (detached).
    """
    if not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier: expected a torch.nn.Module, got {type(classifier).__name__}")
    check_sde("sde", sde)
    if steps is not None:
        steps = check_int("steps", steps)
    if callable(data) and not isinstance(data, Iterable):
        if steps is None:
            raise ValueError("steps: required when data is a callable returning batches, got None")
        batches: Iterable = (data() for _ in range(steps))
    elif isinstance(data, Iterable):
        batches = data
    else:
        raise TypeError(f"data: expected a callable returning (x0, y) or an iterable of batches, got {type(data).__name__}")
    if optimizer is None:
        optimizer = torch.optim.Adam(classifier.parameters(), lr=as_real("lr", lr, positive=True))
    was_training = classifier.training
    classifier.train()
    losses = []
    try:
        for i, batch in enumerate(batches):
            if steps is not None and i >= steps:
                break
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError(f"data: expected batches (x0, y), got {type(batch).__name__}")
            x0, y = batch
            loss = noisy_classifier_loss(classifier, sde, x0, y, t_min=t_min, generator=generator, time_input=time_input)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
    finally:
        classifier.train(was_training)
    if not losses:
        raise ValueError("data: yielded no batches")
    return torch.stack(losses)
