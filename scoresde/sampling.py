"""Sampling from score-based diffusion models: one entry point, many samplers.

```python
import scoresde
from scoresde import VPSDE, GaussianMixture, DPMSolverPP

sde = VPSDE()
score = GaussianMixture.ring(8).diffused(sde).score
x = scoresde.sample(sde, score, (1000, 2), DPMSolverPP(order=3), steps=10, generator=0)
```

The samplers live in [`scoresde.samplers`][scoresde.samplers]; the time grids in
[`scoresde.time_grids`][scoresde.time_grids]. See the samplers guide for the mathematics and the
measured accuracy of each.
"""

from .time_grids import KarrasGrid, TimeGrid, UniformLogSNR, UniformTime
from .samplers import *  # noqa: F401,F403
from .samplers import __all__ as _samplers_all

__all__ = list(_samplers_all) + ["TimeGrid", "UniformTime", "KarrasGrid", "UniformLogSNR"]
