"""The peers' own packages for comparison tests, each imported or skipped cleanly.

k-diffusion's package `__init__` imports its training stack (torchvision, clean-fid, CLIP,
wandb), which its samplers do not use, and its pinned torchvision would replace the CPU
torch build. CI therefore installs it without dependencies
(`pip install --no-deps k-diffusion`), and [`k_diffusion_sampling`][] loads its
`sampling.py` module, unchanged, with the single helper it takes from `k_diffusion.utils`
(`append_dims`, which appends trailing singleton dimensions) when the full package does not
import.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest


def k_diffusion_sampling():
    """k-diffusion's `k_diffusion.sampling` module, or skip the calling test when it is absent."""
    try:
        import k_diffusion.sampling as sampling  # the full package, where its training stack is installed

        return sampling
    except ImportError:
        pass
    name = "_kdiffusion_peer"
    if name + ".sampling" in sys.modules:
        return sys.modules[name + ".sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion)")
    pytest.importorskip("torchdiffeq")
    path = next(iter(spec.submodule_search_locations)) + "/sampling.py"

    pkg = types.ModuleType(name)
    pkg.__path__ = []
    utils = types.ModuleType(name + ".utils")

    def append_dims(x, target_dims):
        # trailing singleton dimensions up to target_dims (what k-diffusion's helper does)
        if target_dims < x.ndim:
            raise ValueError(f"append_dims: x has {x.ndim} dimensions, more than {target_dims}")
        return x.reshape(*x.shape, *([1] * (target_dims - x.ndim)))

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules[name], sys.modules[name + ".utils"] = pkg, utils
    mod_spec = importlib.util.spec_from_file_location(name + ".sampling", path)
    sampling = importlib.util.module_from_spec(mod_spec)
    sys.modules[name + ".sampling"] = sampling
    mod_spec.loader.exec_module(sampling)
    return sampling
