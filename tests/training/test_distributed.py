"""DistributedDataParallel: two CPU processes (gloo, loopback) stay in sync and resume exactly."""

import os
import shutil
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scoresde import VPSDE, DSMLoss, GaussianMixture, ScoreModel, Trainer, nets
from scoresde.training import init_distributed

WORLD = 2


def _net(init_seed):
    torch.manual_seed(init_seed)
    return nets.MLP(2, hidden=32, depth=2, emb_dim=16, num_classes=4, dropout=0.1)


def _make(tmp, init_seed):
    model = ScoreModel(_net(init_seed), VPSDE())
    x, y = GaussianMixture.ring(4, radius=2.0, std=0.3, dtype=torch.float32).sample(
        256, generator=torch.Generator().manual_seed(0), return_labels=True
    )
    return Trainer(
        model, DSMLoss(), (x, y), steps=4, batch_size=32, lr=1e-3, label_dropout=0.2,
        checkpoint=os.path.join(tmp, "ckpt.pt"), checkpoint_every=2, progress=False,
    )


def _worker(rank, port, tmp):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    got_rank, world, device = init_distributed()
    assert (got_rank, world, device.type) == (rank, WORLD, "cpu") and dist.get_backend() == "gloo"
    try:
        # A different initialisation on each process: DDP broadcasts process 0's weights.
        trainer = _make(tmp, init_seed=rank)
        first = {}

        def keep_step_2(tr, step, loss):
            if step == 2:
                first["batch"] = tr.data.state_dict()
                if rank == 0:
                    shutil.copy(os.path.join(tmp, "ckpt.pt"), os.path.join(tmp, "step2.pt"))

        trainer.callback = keep_step_2
        history = trainer.train()
        dist.barrier()
        # resume from the step-2 checkpoint in a fresh trainer on both processes
        resumed = _make(os.path.join(tmp, f"r{rank}"), init_seed=100 + rank)
        resumed.load_checkpoint(os.path.join(tmp, "step2.pt"))
        resumed.config.checkpoint = None
        resumed.train()
        flat = torch.nn.utils.parameters_to_vector(trainer.model.parameters()).detach()
        torch.save(
            {
                "params": flat,
                "resumed": torch.nn.utils.parameters_to_vector(resumed.model.parameters()).detach(),
                "losses": history.losses,
                "resumed_losses": resumed.history.losses,
                "init_norm": torch.nn.utils.parameters_to_vector(_net(rank).parameters()).norm().item(),
            },
            os.path.join(tmp, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_stay_in_sync_and_resume_exactly(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    assert r0["init_norm"] != r1["init_norm"]  # the processes started from different weights...
    assert torch.equal(r0["params"], r1["params"])  # ...and DDP kept one set of weights
    assert r0["losses"] == r1["losses"]  # the logged loss is the average over processes
    assert torch.equal(r0["resumed"], r0["params"]) and torch.equal(r1["resumed"], r1["params"])
    assert r0["resumed_losses"] == r0["losses"]
    # each process saw its own shard: the single-process loss differs from the average
    single = _make(str(tmp_path / "single"), 0)
    single.config.checkpoint = None
    assert single.train().losses != r0["losses"]


class _AugmentedWithNaN(torch.utils.data.Dataset):
    """A map-style dataset with random augmentation; sample `bad` is NaN."""

    def __init__(self, x, y, bad):
        self.x, self.y, self.bad = x, y, bad

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i] + 0.05 * torch.randn(2)
        return (torch.full_like(x, float("nan")) if i == self.bad else x), self.y[i]


def _bad_index():
    # rank 1's first sample of its batch 2 in epoch 0 (the data order of seed 0): drawn at step 3
    return int(torch.randperm(256, generator=torch.Generator().manual_seed(0))[1::WORLD][2 * 32])


def _make_dataset_trainer(path, init_seed):
    x, y = GaussianMixture.ring(4, radius=2.0, std=0.3, dtype=torch.float32).sample(
        256, generator=torch.Generator().manual_seed(0), return_labels=True
    )
    return Trainer(
        ScoreModel(_net(init_seed), VPSDE()), DSMLoss(), _AugmentedWithNaN(x, y, _bad_index()), steps=6,
        batch_size=32, lr=1e-3, label_dropout=0.2, checkpoint=path, checkpoint_every=2, progress=False,
        skip_nonfinite=True,
    )


def _worker_dataset(rank, port, tmp):
    import warnings

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    init_distributed()
    try:
        warnings.simplefilter("ignore")
        trainer = _make_dataset_trainer(os.path.join(tmp, "ckpt.pt"), init_seed=rank)

        def keep_step_2(tr, step, loss):
            if step == 2 and rank == 0:
                shutil.copy(os.path.join(tmp, "ckpt.pt"), os.path.join(tmp, "step2.pt"))

        trainer.callback = keep_step_2
        history = trainer.train()
        dist.barrier()
        resumed = _make_dataset_trainer(None, init_seed=50 + rank)
        resumed.load_checkpoint(os.path.join(tmp, "step2.pt"))
        resumed.train()
        torch.save(
            {
                "params": torch.nn.utils.parameters_to_vector(trainer.model.parameters()).detach(),
                "losses": history.losses,
                "skipped": history.skipped,
                "resumed_losses": resumed.history.losses,
            },
            os.path.join(tmp, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_a_dataset_under_ddp_resumes_exactly_and_a_bad_batch_is_skipped_by_every_process(tmp_path):
    """One process's batch holds a NaN sample: both processes skip that step's batches together (no hang)."""
    mp.spawn(_worker_dataset, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    assert torch.equal(r0["params"], r1["params"]) and r0["losses"] == r1["losses"]
    steps = [s["step"] for s in r0["skipped"]]
    assert steps[0] == 3 and steps == [s["step"] for s in r1["skipped"]]  # (the sample comes round again next epoch)
    assert r1["skipped"][0]["rows"] == [0] and f"dataset indices [{_bad_index()}]" in r1["skipped"][0]["where"]
    assert r0["skipped"][0]["where"] == "another process's batch"
    for a, b in zip(r0["skipped"], r1["skipped"]):  # each skip: the sample is in exactly one process's batch
        assert (a["rows"] == []) != (b["rows"] == [])
    assert r0["resumed_losses"] == r0["losses"] and r1["resumed_losses"] == r1["losses"]
