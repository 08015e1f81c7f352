"""scoresde: score-based diffusion models as stochastic differential equations.

The front door holds the main path: the SDEs and their discrete chains, `ScoreModel`,
`sample`/`impute`/`log_likelihood`, the common samplers, guidance, the analytic mixture and
training.

```python
import scoresde
from scoresde import VPSDE, GaussianMixture, DPMSolverPP

sde = VPSDE()
score = GaussianMixture.ring(8).diffused(sde).score
x = scoresde.sample(sde, score, (1000, 2), DPMSolverPP(order=3), steps=10, generator=0)
```

Everything else lives in its subpackage or module and is documented there:
`scoresde.samplers` (every sampler and the sampling loop), `scoresde.time_grids` (time grids),
`scoresde.guidance`, `scoresde.training`, `scoresde.losses`, `scoresde.likelihood`,
`scoresde.parameterization` (eps/score/x0/v conversions), `scoresde.vp_schedules`,
`scoresde.analytic`, `scoresde.sde` (the reverse SDE and probability-flow problems),
`scoresde.chains`, `scoresde.inpainting`, `scoresde.nets`, `scoresde.plotting`, and the
training recipes `scoresde.flow`, `scoresde.preconditioning`, `scoresde.noise_levels`,
`scoresde.recipes`, `scoresde.score_matching`. See the documentation's tutorials for the
mathematics behind each piece.
"""

# The subpackages and modules, as attributes (`scoresde.samplers.DEIS`); none is star-imported.
from . import (  # noqa: F401
    analytic,
    chains,
    flow,
    guidance,
    inpainting,
    likelihood,
    linear_sde,
    losses,
    nets,
    noise_levels,
    parameterization,
    plotting,
    preconditioning,
    recipes,
    samplers,
    score_matching,
    score_model,
    sde,
    time_grids,
    training,
    vp_schedules,
)
from .analytic import GaussianMixture
from .chains import DDPMSchedule, NCSNSchedule
from .guidance import LinearMeasurement, cfg_score, classifier_guided_score, guided_score, posterior_score
from .inpainting import impute
from .likelihood import log_likelihood
from .linear_sde import EDM, LinearSDE, RectifiedFlow
from .losses import DSMLoss
from .score_model import ScoreModel
from .samplers import (
    LMS,
    DDIM,
    Ancestral,
    AnnealedLangevin,
    DPMSolverPP,
    EDMHeun,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusion,
    UniPC,
    sample,
)
from .sde import SDE, VESDE, VPSDE, SubVPSDE
from .training import TrainConfig, Trainer

__version__ = "0.1.0"

__all__ = [
    # forward processes and their discrete chains
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "LinearSDE",
    "RectifiedFlow",
    "EDM",
    "DDPMSchedule",
    "NCSNSchedule",
    # a network as a score
    "ScoreModel",
    # sampling, imputation and likelihood
    "sample",
    "impute",
    "log_likelihood",
    # the common samplers (every sampler: scoresde.samplers)
    "DPMSolverPP",
    "UniPC",
    "DDIM",
    "EDMHeun",
    "Ancestral",
    "ReverseDiffusion",
    "PredictorCorrector",
    "LangevinCorrector",
    "AnnealedLangevin",
    "LMS",
    # guidance (the rest: scoresde.guidance)
    "guided_score",
    "cfg_score",
    "classifier_guided_score",
    "posterior_score",
    "LinearMeasurement",
    # exact references and training
    "GaussianMixture",
    "DSMLoss",
    "Trainer",
    "TrainConfig",
    "__version__",
]
