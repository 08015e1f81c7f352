r"""solvers: diffusion-agnostic, GPU-native SDE/ODE integrators for batched tensors.

```python
import torch, solvers

x0 = torch.randn(16, 3, 32, 32)
ts = solvers.uniform_grid(1.0, 1e-3, 500)               # time may decrease
sol = solvers.integrate(problem, x0, ts, solver=solvers.EulerMaruyama(),
                        noise=solvers.SeededNoise(list(range(16))))
sol.x, sol.nfe
```

* Problems are plain objects: an SDE has `drift(x, t)` and `diffusion(x, t)` (optional
  `noise_type`, `sde_type`), an ODE has `vector_field(x, t)` or is a callable.
* Solvers are instances: `EulerMaruyama`, `StochasticHeun`, `SRA1` (SDE); `Euler`,
  `Midpoint`, `Heun`, `RK4` (fixed-step ODE); `BogackiShampine`, `Dopri5` (adaptive).
* Noise: `GeneratorNoise` (a `torch.Generator`), `SeededNoise` (per-sample seeds),
  `BrownianTree` (one path at any resolution, optional Lévy area).
* Langevin MCMC: `langevin` with `ULA` / `MALA`, and the steps `ula_step`, `mala_step`.
* Grids: `uniform_grid`, `grid_from_fn`.
* `solvers.reference`: the same problems through torchsde and scipy; `solvers.testing`:
  problems with exact solutions.

The package never imports `scoresde`. (An unrelated small PyPI project is also called
`solvers`; this one ships inside the `scoresde` distribution.)
"""

from . import problems, reference, testing
from ._utils import MaxStepsError, NonFiniteError
from .adaptive import AdaptiveRK, BogackiShampine, Dopri5, PIController
from .base import AbstractODESolver, AbstractSDESolver, AbstractSolver, Solution, StepEvent, integrate
from .grids import as_grid, grid_from_fn, uniform_grid
from .langevin import MALA, ULA, LangevinResult, MALAStep, langevin, mala_step, ula_step
from .noise import BrownianTree, GeneratorNoise, NoiseSource, PerSampleGenerators, SeededNoise, as_noise_source
from .ode import RK4, ButcherTableau, Euler, ExplicitRK, Heun, Midpoint
from .problems import ODE, SDE, time_reversed
from .sde import SRA1, EulerMaruyama, StochasticHeun

__all__ = [
    # entry point and results
    "integrate", "Solution", "StepEvent", "NonFiniteError", "MaxStepsError",
    # problems
    "SDE", "ODE", "time_reversed", "problems",
    # SDE solvers
    "EulerMaruyama", "StochasticHeun", "SRA1",
    # ODE solvers
    "Euler", "Midpoint", "Heun", "RK4", "BogackiShampine", "Dopri5", "PIController",
    # extension points
    "AbstractSolver", "AbstractODESolver", "AbstractSDESolver", "ExplicitRK", "AdaptiveRK", "ButcherTableau",
    # noise
    "NoiseSource", "GeneratorNoise", "SeededNoise", "BrownianTree", "PerSampleGenerators", "as_noise_source",
    # grids
    "uniform_grid", "grid_from_fn", "as_grid",
    # Langevin MCMC
    "langevin", "ULA", "MALA", "ula_step", "mala_step", "MALAStep", "LangevinResult",
    # references and test problems
    "reference", "testing",
]
