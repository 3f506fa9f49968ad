"""Under torchrun: distil a ToyNet teacher into a ToyNet student with DDP (gloo) for 2 epochs.

usage: python -m torch.distributed.run --nproc_per_node 2 engine_ddp_distill.py OUT_DIR
Rank 0 writes OUT_DIR/ddp_distill.json: which tensors the DDP wrapper holds, and whether after
training the student, its projector and the (unchanged) teacher are identical on both ranks.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from engine_toys import ToyFaces, toy_distiller
from kdfiqa.engine import TrainConfig, Trainer, init_distributed, shutdown_distributed
from kdfiqa.engine.distributed import all_gather_objects


def _ids(module: torch.nn.Module) -> set[int]:
    return {id(t) for t in [*module.parameters(), *module.buffers()]}


def _same(states: list[dict[str, torch.Tensor]]) -> bool:
    return all(torch.equal(v, other[k]) for other in states[1:] for k, v in states[0].items())


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial teacher, student and projector on every rank
    ctx = init_distributed("cpu")
    distiller = toy_distiller()
    teacher_before = copy.deepcopy(distiller.teacher.state_dict())
    projector_before = distiller.trainable.feature_losses[0].projector.weight.detach().clone()
    cfg = TrainConfig(output_dir=str(out), epochs=2, batch_size=4, lr=0.05, optimizer="sgd",
                      scheduler="none", device="cpu", quiet=True)
    trainer = Trainer(distiller, ToyFaces(16), ToyFaces(8, seed=1, noise=0.0), cfg, ctx=ctx)
    wrapped = trainer.net.module if isinstance(trainer.net, DistributedDataParallel) else None
    report = {
        "ddp": wrapped is distiller.trainable,
        "teacher_tensors_in_ddp": len(_ids(wrapped) & _ids(distiller.teacher)) if wrapped else -1,
        "ddp_params_are_student_and_projector": wrapped is not None and {
            id(p) for p in wrapped.parameters()
        } == {id(p) for p in [*distiller.model.parameters(),
                              *distiller.trainable.feature_losses.parameters()]},
    }
    history = trainer.fit()
    trained = {k: v.detach().clone() for k, v in distiller.trainable.state_dict().items()}
    teacher = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    ranks = all_gather_objects((trained, teacher), ctx)
    if ctx.is_main:
        report.update(
            world_size=ctx.world_size,
            trainable_same_on_ranks=_same([t for t, _ in ranks]),
            teacher_same_on_ranks=_same([t for _, t in ranks]),
            teacher_unchanged=_same([teacher, teacher_before]),
            projector_changed=not torch.equal(trained["feature_losses.0.projector.weight"],
                                              projector_before),
            train_terms=sorted(history[-1]["train"]),
        )
        torch.save(trained, out / "trained.pt")
        (out / "ddp_distill.json").write_text(json.dumps(report))
    shutdown_distributed()


if __name__ == "__main__":
    main()
