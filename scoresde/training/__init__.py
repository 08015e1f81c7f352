r"""Training utilities: a resumable training loop with EMA, mixed precision and DDP.

```python
from scoresde import VPSDE, ScoreModel, DSMLoss, Trainer, TrainConfig, nets

model = ScoreModel(nets.MLP(dim=2), VPSDE(), prediction="eps")
trainer = Trainer(model, DSMLoss(), data, TrainConfig(steps=5000, checkpoint="out/ckpt.pt"))
history = trainer.train(resume=True)      # picks up out/ckpt.pt if it exists
samples_model = trainer.ema.module        # the EMA weights, a ScoreModel
```

What the [`Trainer`][scoresde.training.Trainer] does each step: draw a batch in a seeded
order, drop class labels with probability `label_dropout` (classifier-free guidance
training), evaluate the loss under autocast (bf16 on CUDA devices that support it, off on
the CPU), backpropagate, clip the gradient norm, check the loss and the gradient for NaN
or infinity *before* the update, take an AdamW step with linear warm-up, update the EMA
of the weights and the tqdm bar.

Checkpoints hold the model, the EMA, the optimizer, the learning-rate schedule, the
gradient scaler, every random state (torch, CUDA, numpy, Python and the trainer's own
generator, per process) and the position in the data order, so a run resumed from its
last checkpoint reproduces the loss trajectory of an uninterrupted run exactly, for tensor,
map-style and iterable data, with any `num_workers`, dropout and data augmentation
included (`scoresde.training.data` says how). They carry the SHA-256 of their content,
verified on load; they are written atomically (a temporary file, `fsync`, verification,
then `os.replace`, keeping the replaced file as `<name>.prev`), never from a non-finite
state, and loading checks that the checkpoint belongs to the same model and SDE before
anything is changed (`scoresde.training.checkpoints`).

The package, one idea per file: `ema` (EMA), `config` (TrainConfig), `history` (History),
`data` (the seeded sharded data order), `distributed` (DDP set-up), `checkpoints`
(verified files, random states), `trainer` (the loop), `errors`. Pictures of samples and
loss curves live in [`scoresde.plotting`][scoresde.plotting].

Under `torchrun` call [`init_distributed`][scoresde.training.init_distributed] first: the
trainer then wraps the model in `DistributedDataParallel` (gloo on the CPU, NCCL on CUDA),
gives each process its own shard of each epoch and its own noise, averages the logged loss
over processes and lets process 0 write checkpoints and samples.
"""

from .config import TrainConfig
from .distributed import init_distributed
from .ema import EMA
from .errors import CheckpointError, NonFiniteLossError
from .history import History
from .trainer import Trainer
from ..plotting import image_grid, save_image_grid, save_loss_curve, save_samples

__all__ = [
    "EMA",
    "TrainConfig",
    "Trainer",
    "History",
    "CheckpointError",
    "NonFiniteLossError",
    "init_distributed",
    "image_grid",
    "save_image_grid",
    "save_samples",
    "save_loss_curve",
]
