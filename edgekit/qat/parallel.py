"""Data parallelism through torch.distributed as torchrun sets it up (no process management of our own).

`torchrun --nproc-per-node N -m edgekit.qat ...` exports RANK/WORLD_SIZE/MASTER_ADDR; `Group.from_env` joins the
process group (gloo on CPUs, NCCL when training on CUDA, rank r on cuda:LOCAL_RANK) and `wrap` hands a student to
DistributedDataParallel,
which averages gradients over ranks. Without torchrun everything runs in one process, unwrapped.
Each rank takes the batch's sequences `rank::world`; rank 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Group:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_env(cls, device: torch.device | None = None) -> "Group":
        """The run's process group; `device` (resolved --device): a CUDA run gives each rank its own GPU."""
        device = device or torch.device("cpu")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=device)
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device)

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        return items[self.rank :: self.world]

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def total(self, value: float) -> float:
        """Sum of a number over ranks (the reported loss of a step)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t[0])

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
