"""Multi-process training: DistributedDataParallel set up from submitit's job environment.

One process per GPU (Slurm task). Each process loads its share of every global batch
(:meth:`gfl_repro.datasets.coco.EpochSampler.rank_order`); DDP averages gradients; the head
normalises its losses by process-averaged counts (mmdet's ``reduce_mean``), so loss and
gradients equal those of one process on the whole global batch. Only rank 0 writes files.
"""

from __future__ import annotations


import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel


class DistributedDetector(DistributedDataParallel):
    """DDP around a Detector, keeping the Detector's ``loss`` / checkpoint interface."""

    def loss(self, images, targets):
        return self(images, targets)

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True):
        return self.module.load_state_dict(state_dict, strict=strict)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def job_environment():
    """submitit's ``JobEnvironment`` of this process, or None outside a submitit job."""
    import submitit

    try:
        return submitit.JobEnvironment()
    except RuntimeError:
        return None


def init_from_submitit() -> torch.device | None:
    """Join the job's process group when the Slurm job has several tasks; the local device.

    Returns None when there is nothing to set up: a single-task job, no submitit job, or a
    process group that is already running.
    """
    import submitit

    if world_size() > 1:
        return None
    env = job_environment()
    if env is None or env.num_tasks <= 1:
        return None
    dist_env = submitit.helpers.TorchDistributedEnvironment().export()
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(dist_env.local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=dist_env.rank, world_size=dist_env.world_size)
    return torch.device(f"cuda:{dist_env.local_rank}") if use_cuda else torch.device("cpu")


def reduce_mean(value: Tensor) -> Tensor:
    """mmdet's ``reduce_mean``: the average of a 0-dim tensor over the processes (itself with
    one), divided by the number of processes then summed over them, as mmdet does; it stays on
    its device, so a loss normaliser never has to be read back to the host."""
    if world_size() == 1:
        return value
    tensor = value.detach().clone().div_(dist.get_world_size())
    dist.all_reduce(tensor)
    return tensor


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP-wrap ``model`` (already on ``device``) when a process group is running."""
    if world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDetector(model, device_ids=ids, find_unused_parameters=False)


__all__ = ["DistributedDetector", "init_from_submitit", "is_main", "job_environment", "rank", "reduce_mean", "world_size",
           "wrap"]
