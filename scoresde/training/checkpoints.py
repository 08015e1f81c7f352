r"""Checkpoint files: verified on load, written atomically, and what they hold besides weights.

A checkpoint is the zip archive that `torch.save` writes, with the SHA-256 of everything
before it recorded in the archive's comment field (the last bytes of the file), so the
file is still an ordinary `torch.load`-able checkpoint. `torch.load` itself checks no
checksum: one flipped byte in a tensor record silently changes a weight. On load the digest
is recomputed over the bytes read, and those same bytes are unpickled, so what is loaded
is what was verified.

Writing: the archive is serialised in memory, written to `.<name>.tmp-<pid>` in the same
directory, flushed and `fsync`ed, read back and verified, then renamed over the old file
with `os.replace` (atomic on POSIX and Windows). The file it replaces is kept as
`<name>.prev` (a hard link, or a copy where links are not supported), so a checkpoint that
later rots still has a good predecessor. Temporary files that killed runs left behind
(their process is gone) are removed on the next save.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .errors import CheckpointError

_FORMAT = "scoresde.trainer/1"
_MAGIC = b"scoresde-sha256:"
_COMMENT_LEN = len(_MAGIC) + 64
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory signature; its record is 22 bytes + comment


def _sign(archive: bytes) -> bytes:
    """Put the SHA-256 of `archive` (a zip without comment) into its comment field."""
    if len(archive) < 22 or archive[-22:-18] != _EOCD or archive[-2:] != b"\x00\x00":
        raise RuntimeError("torch.save wrote an archive without a plain zip end record; cannot sign it")
    body = archive[:-2]  # everything up to the comment length
    comment = _MAGIC + hashlib.sha256(body).hexdigest().encode()
    return body + len(comment).to_bytes(2, "little") + comment


def _verify(data: bytes, path: Path) -> bool:
    """Check the recorded SHA-256; True if verified, False if the file carries none (older files)."""
    n = _COMMENT_LEN
    signed = (
        len(data) >= 22 + n
        and data[-n - 22 : -n - 18] == _EOCD
        and data[-n - 2 : -n] == n.to_bytes(2, "little")
        and data[-n:].startswith(_MAGIC)
    )
    if not signed:
        if data[-22:-18] == _EOCD:
            return False  # a zip archive without our digest
        raise CheckpointError(
            f"path: {path} is damaged or not a checkpoint: no zip end record with a SHA-256 digest at its end"
            " (truncated or overwritten?)"
        )
    recorded = data[-n + len(_MAGIC) :].decode("ascii", "replace")
    actual = hashlib.sha256(data[: -n - 2]).hexdigest()
    if actual != recorded:
        raise CheckpointError(
            f"path: {path} is damaged: the SHA-256 of its content is {actual[:16]}..., not the {recorded[:16]}..."
            " recorded when it was written (a changed byte: disk or copy error)"
        )
    return True


def _non_finite(tree, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a nested dict/list that hold NaN or infinity."""
    if isinstance(tree, Tensor):
        return [prefix] if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else []
    if isinstance(tree, dict):
        return [name for k, v in tree.items() for name in _non_finite(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(tree, (list, tuple)):
        return [name for i, v in enumerate(tree) for name in _non_finite(v, f"{prefix}[{i}]")]
    return []


def non_finite_state(state: dict) -> list[str]:
    """Where the model, EMA or optimizer parts of a trainer state hold NaN or infinity."""
    bad = _non_finite(state.get("model"), "model")
    if state.get("ema") is not None:
        bad += _non_finite(state["ema"].get("module"), "ema")
    if state.get("optimizer") is not None:
        bad += _non_finite(state["optimizer"].get("state"), "optimizer")
    return bad


def previous_path(path: Path) -> Path:
    """Where the checkpoint that `path` replaced is kept."""
    return path.with_name(path.name + ".prev")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read, verify and unpickle a checkpoint; [`CheckpointError`][scoresde.training.CheckpointError] if damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint at {path}")
    data = path.read_bytes()
    try:
        signed = _verify(data, path)
    except CheckpointError as err:
        raise CheckpointError(f"{err}; the file is left as it is{_hint_previous(path)}") from None
    if not signed:
        warnings.warn(f"checkpoint: {path} carries no SHA-256 digest (an older file); it is loaded unverified", stacklevel=3)
    try:
        # On the host: random states must stay CPU tensors; load_state_dict moves the rest.
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign file
        raise CheckpointError(f"path: cannot read a checkpoint from {path}: {err}") from err


def _hint_previous(path: Path) -> str:
    prev = previous_path(path)
    if prev.is_file():
        return f"; the checkpoint it replaced is kept at {prev}: resume from it with trainer.load_checkpoint({str(prev)!r})"
    return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or cannot tell: keep its file
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete `.<name>.tmp-<pid>` files next to `path` whose process is gone; returns them."""
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def write_checkpoint(state: dict, path: Path) -> None:
    """Serialise, sign, write atomically, verify and rotate (see the module's docstring)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = _sign(buffer.getvalue())
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not _verify(tmp.read_bytes(), tmp):  # what reached the disk is what was meant
            raise CheckpointError(f"path: the checkpoint written to {tmp} carries no digest")
        if path.is_file():  # keep the one being replaced
            prev = previous_path(path)
            prev.unlink(missing_ok=True)
            try:
                os.link(path, prev)
            except OSError:
                shutil.copy2(path, prev)
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not possible on this platform (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_checkpoint_path(path) -> Path:
    """Refuse, before any training, a checkpoint path that is a directory or cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"checkpoint: {str(path)!r} is a directory; expected the path of a checkpoint file, e.g. {str(path / 'ckpt.pt')!r}"
        )
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"checkpoint: cannot create {str(path)!r}: {str(parent)!r} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"checkpoint: cannot write {str(path)!r}: the directory {str(parent)!r} is not writable")
    if path.exists() and not path.is_file():
        raise ValueError(f"checkpoint: {str(path)!r} exists and is not a regular file")
    return path


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "python": random.getstate(),
        "generator": generator.get_state(),
    }


def _set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    generator.set_state(state["generator"])


def _describe_model(model: nn.Module) -> dict:
    net = getattr(model, "net", None)
    sde = getattr(model, "sde", None)
    return {
        "model": type(model).__qualname__,
        "net": type(net).__qualname__ if net is not None else None,
        "sde": repr(sde) if sde is not None else None,
        "prediction": getattr(model, "prediction", None),
        "shapes": {k: tuple(v.shape) for k, v in model.state_dict().items()},
    }
