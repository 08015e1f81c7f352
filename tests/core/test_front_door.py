"""The front door: `scoresde.__all__` is the main path; every other name lives in its module."""

import ast
import pathlib
import types

import pytest

import scoresde

ROOT = pathlib.Path(__file__).resolve().parents[2]

FRONT_DOOR = {
    "SDE", "VPSDE", "SubVPSDE", "VESDE", "LinearSDE", "RectifiedFlow", "EDM", "DDPMSchedule",
    "NCSNSchedule", "ScoreModel", "sample", "impute", "log_likelihood", "DPMSolverPP", "UniPC",
    "DDIM", "EDMHeun", "Ancestral", "ReverseDiffusion", "PredictorCorrector", "LangevinCorrector",
    "AnnealedLangevin", "LMS", "guided_score", "cfg_score", "classifier_guided_score",
    "posterior_score", "LinearMeasurement", "GaussianMixture", "DSMLoss", "Trainer", "TrainConfig",
    "__version__",
}  # fmt: skip

#: DESIGN.md's "Public API": importable from the top level.
DESIGN_NAMES = [
    "VPSDE", "SubVPSDE", "VESDE", "ScoreModel", "guided_score", "classifier_guided_score",
    "sample", "impute", "log_likelihood", "LinearSDE", "posterior_score", "LinearMeasurement",
]  # fmt: skip

SUBPACKAGES = [
    "analytic", "chains", "flow", "guidance", "inpainting", "likelihood", "linear_sde",
    "losses", "nets", "noise_levels", "parameterization", "plotting", "preconditioning", "recipes",
    "samplers", "score_matching", "score_model", "sde", "time_grids", "training", "vp_schedules",
]  # fmt: skip


def test_all_is_the_front_door():
    assert set(scoresde.__all__) == FRONT_DOOR
    assert len(scoresde.__all__) == len(FRONT_DOOR) <= 36
    for name in scoresde.__all__:
        assert getattr(scoresde, name) is not None


def test_no_other_public_name_at_the_top_level():
    extra = {
        n for n in vars(scoresde)
        if not n.startswith("_") and not isinstance(getattr(scoresde, n), types.ModuleType)
    } - FRONT_DOOR  # fmt: skip
    assert not extra, f"names outside __all__ at the top level: {sorted(extra)}"


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_design_names_at_the_top_level(name):
    assert name in scoresde.__all__


@pytest.mark.parametrize("module", SUBPACKAGES)
def test_subpackages_are_attributes_and_export_what_they_list(module):
    mod = getattr(scoresde, module)
    assert isinstance(mod, types.ModuleType)
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"scoresde.{module}.__all__ lists {name}, which it lacks"


def test_samplers_reachable_as_attributes():
    from scoresde.samplers import Sampler

    samplers = [getattr(scoresde.samplers, n) for n in scoresde.samplers.__all__]
    classes = [s for s in samplers if isinstance(s, type) and issubclass(s, Sampler) and s is not Sampler]
    assert scoresde.samplers.DEIS in classes and scoresde.samplers.DPMSolverPP is scoresde.DPMSolverPP
    assert len(classes) >= 15


def test_removed_names_are_gone():
    for name in ("sampling", "validation", "validation_enabled", "KarrasGrid", "ForwardSDE", "tweedie_denoiser"):
        assert not hasattr(scoresde, name), name
    assert not (ROOT / "scoresde" / "sampling.py").exists()  # the alias module of scoresde.samplers
    assert not hasattr(scoresde.sde.SDE, "as_problem")
    assert not hasattr(scoresde.parameterization, "tweedie_denoiser")


def test_no_star_import_in_the_front_door():
    tree = ast.parse((ROOT / "scoresde" / "__init__.py").read_text())
    stars = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)]
    assert not stars
