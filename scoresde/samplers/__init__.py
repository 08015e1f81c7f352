"""Samplers of score-based diffusion models: the sampling loop, every sampler, the imputation wrapper."""

from .base import PerSampleGenerators, Sampler, SamplingContext, StepInfo, as_noise_source
from .run import sample
from .exponential import DPMSolverPP, UniPC
from .fitted import FittedGrid, fit_grid
from .mean_shift import MeanShiftGuidance
from .imputation import Imputation, repaint_schedule
from .lms import LMS
from .langevin import AnnealedLangevin, ncsn_levels, ncsn_ratio, ncsn_sigma_max, ncsn_step_size
from .ode import DDIM, EDMHeun
from .reverse import Ancestral, LangevinCorrector, PredictorCorrector, ReverseDiffusion
from .solver import ProbabilityFlowSampler, ReverseSDESampler

__all__ = [
    "sample",
    "Sampler",
    "SamplingContext",
    "StepInfo",
    "PerSampleGenerators",
    "as_noise_source",
    "ReverseSDESampler",
    "ProbabilityFlowSampler",
    "ReverseDiffusion",
    "Ancestral",
    "LangevinCorrector",
    "PredictorCorrector",
    "AnnealedLangevin",
    "ncsn_sigma_max",
    "ncsn_ratio",
    "ncsn_levels",
    "ncsn_step_size",
    "DDIM",
    "EDMHeun",
    "DPMSolverPP",
    "UniPC",
    "LMS",
    "FittedGrid",
    "fit_grid",
    "MeanShiftGuidance",
    "Imputation",
    "repaint_schedule",
]
from .deis import DEIS  # noqa: E402
from .dpm_adaptive import DPMSolverAdaptive  # noqa: E402
from .dpmpp_sde import DPMSolverPPSDE  # noqa: E402
from .ipndm import IPNDM  # noqa: E402
from .pndm import PNDM  # noqa: E402
from .sa_solver import SASolver  # noqa: E402
from .singlestep import DPMSolverSinglestep  # noqa: E402

__all__ += ["DPMSolverSinglestep", "DEIS", "IPNDM", "PNDM", "DPMSolverPPSDE", "SASolver", "DPMSolverAdaptive"]
