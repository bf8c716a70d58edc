"""Data parallelism through torch.distributed as torchrun sets it up (no process management of our own).

`torchrun --nproc-per-node N -m edgekit.qat ...` exports RANK/WORLD_SIZE/MASTER_ADDR; `Group.from_env` joins the
process group (gloo on CPUs, NCCL where CUDA is available) and `wrap` hands a student to DistributedDataParallel,
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

    @classmethod
    def from_env(cls) -> "Group":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        return items[self.rank::self.world]

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def total(self, value: float) -> float:
        """Sum of a number over ranks (the reported loss of a step)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0])

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
