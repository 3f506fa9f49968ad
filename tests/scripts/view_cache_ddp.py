"""Build a teacher view cache of the tiny teacher in this process (or under torchrun: each rank its
share) and save it from rank 0 to ``argv[3]``; images ``argv[1]``, labels ``argv[2]``."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiny_fiqa import TINY  # noqa: E402

from kdfiqa.data import FIQADataset, build_transform  # noqa: E402
from kdfiqa.distill import Teacher, build_view_cache  # noqa: E402
from kdfiqa.engine.distributed import init_distributed, shutdown_distributed  # noqa: E402
from kdfiqa.models import create_model  # noqa: E402

SPEC = {"mode": "randcrop_or_resize", "size": 24, "crop": 32, "teacher_size": 32, "flip": True}

ctx = init_distributed("cpu")
torch.manual_seed(0)
teacher = Teacher(create_model(TINY))
dataset = FIQADataset(sys.argv[1], sys.argv[2], transform=build_transform(SPEC))
torch.manual_seed(100 + ctx.rank)  # each rank's own stream: the cache must not depend on it
cache = build_view_cache(teacher, dataset, views=3, batch_size=2, seed=1, ctx=ctx)
if ctx.is_main:
    cache.save(sys.argv[3])
shutdown_distributed()
