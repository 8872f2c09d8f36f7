"""DistributedDataParallel: two processes (gloo), each training a 2-layer bidirectional tritongru.GRU on half of
the batch, end with the parameters one process gets by training on the whole batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import assert_close
from torch.nn.parallel import DistributedDataParallel

import tritongru

WORLD_SIZE = 2
STEPS = 3


def problem(device_type: str):
    """The same model, inputs and targets in every process: ``[T, B, I] = [3, 4, 3]``."""
    torch.manual_seed(0)
    model = tritongru.GRU(3, 4, num_layers=2, bidirectional=True, device=device_type)
    x = torch.randn(3, 4, 3, device=device_type)
    y = torch.randn(3, 4, 8, device=device_type)
    return model, x, y


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(STEPS):
        optimizer.zero_grad()
        ((model(x)[0] - y) ** 2).mean().backward()
        optimizer.step()


def train_shard(rank: int, init_file: str, result_file: str, device_type: str) -> None:
    """One process: its half of the batch (dimension 1) through DDP; rank 0 saves the parameters."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model, x, y = problem(device_type)
        shard = slice(rank * 2, rank * 2 + 2)
        train(DistributedDataParallel(model), x[:, shard], y[:, shard])
        if rank == 0:
            torch.save({name: value.cpu() for name, value in model.state_dict().items()}, result_file)
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one(device, tmp_path):
    result_file = tmp_path / "rank0.pt"
    mp.spawn(
        train_shard,
        args=(str(tmp_path / "init"), str(result_file), device.type),
        nprocs=WORLD_SIZE,
        join=True,
    )
    distributed = torch.load(result_file)
    model, x, y = problem(device.type)
    initial = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
    train(model, x, y)
    for name, value in model.state_dict().items():
        assert not torch.allclose(distributed[name], initial[name]), f"{name} did not train"
        assert_close(distributed[name], value.cpu(), torch.float32, name)
