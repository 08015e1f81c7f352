"""scoresde: score-based diffusion models as stochastic differential equations.

The public API in one import:

```python
from scoresde import VPSDE, SubVPSDE, VESDE, ScoreModel
```

See the documentation's tutorials for the mathematics behind each piece.
"""

from . import analytic, chains, parameterization, vp_schedules
from .analytic import DiffusedMixture, GaussianMixture
from .vp_schedules import CosineSchedule, InterpolatedSchedule, LinearSchedule, VPSchedule
from .parameterization import (
    PREDICTIONS,
    ScoreModel,
    convert,
    eps_to_score,
    eps_to_v,
    eps_to_x0,
    score_to_eps,
    score_to_x0,
    tweedie_denoiser,
    v_to_eps,
    v_to_x0,
    x0_to_eps,
    x0_to_score,
    x0_to_v,
)
from .chains import DDPMSchedule, NCSNSchedule
from .sde import SDE, VESDE, VPSDE, ForwardSDE, ProbabilityFlowODE, ReverseSDE, SubVPSDE
from .linear_sde import EDM, LinearSDE, RectifiedFlow

# Each of these modules lists its public names in its own __all__.
from . import guidance, likelihood, losses, sampling, training  # noqa: E402
from .guidance import *  # noqa: E402,F401,F403
from .inpainting import IMPUTE_PREDICTORS, impute, replace_known  # noqa: E402
from .likelihood import *  # noqa: E402,F401,F403
from .losses import *  # noqa: E402,F401,F403
from .sampling import *  # noqa: E402,F401,F403
from .training import *  # noqa: E402,F401,F403

# Training recipes (flow matching, EDM) and score matching without noise.
from . import flow, noise_levels, preconditioning, recipes, score_matching  # noqa: E402
from .noise_levels import *  # noqa: E402,F401,F403
from .parameterization import MODEL_PREDICTIONS  # noqa: E402
from .preconditioning import *  # noqa: E402,F401,F403
from .recipes import *  # noqa: E402,F401,F403
from .score_matching import *  # noqa: E402,F401,F403

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "LinearSDE",
    "RectifiedFlow",
    "EDM",
    "ReverseSDE",
    "ProbabilityFlowODE",
    "ForwardSDE",
    "VPSchedule",
    "LinearSchedule",
    "CosineSchedule",
    "InterpolatedSchedule",
    "DDPMSchedule",
    "NCSNSchedule",
    "ScoreModel",
    "PREDICTIONS",
    "convert",
    "eps_to_score",
    "score_to_eps",
    "eps_to_x0",
    "x0_to_eps",
    "score_to_x0",
    "x0_to_score",
    "tweedie_denoiser",
    "eps_to_v",
    "v_to_eps",
    "x0_to_v",
    "v_to_x0",
    "GaussianMixture",
    "DiffusedMixture",
    "analytic",
    "vp_schedules",
    "chains",
    "parameterization",
    "guidance",
    "likelihood",
    "losses",
    "sampling",
    "training",
]
__all__ += ["impute", "replace_known", "IMPUTE_PREDICTORS"]
__all__ += guidance.__all__ + likelihood.__all__ + losses.__all__ + sampling.__all__ + training.__all__
__all__ += ["MODEL_PREDICTIONS", "flow", "noise_levels", "preconditioning", "recipes", "score_matching"]
__all__ += noise_levels.__all__ + preconditioning.__all__ + recipes.__all__ + score_matching.__all__
