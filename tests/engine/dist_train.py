"""Run under torchrun by test_distributed.py: train toy_denoise on 2 gloo ranks, save each replica.

G has batch norm and one forward serves both updates of a step (as in pix2pix): the engine must share
the running statistics across ranks without touching tensors the generator's backward still needs. One
validation case for two ranks: the rank without a case must still join the metric reduction."""
import sys

import torch
import torch.distributed as dist

from medgen.engine.commands import build_config, train_config

out = sys.argv[1]
cls, cfg = build_config(
    "toy_denoise",
    None,
    ["train.iterations=6", "train.val_every=3", "train.log_every=2", "train.progress=off", "model.adversarial=true",
     "model.batch_norm=true",
     "train.max_val_cases=1",  # rank 1 validates nothing: the metric reduction must still match up
     "train.device=cpu", "train.deterministic=true", f"output.root={out}", "output.name=dist"],
)
from medgen.engine import trainer as trainer_mod

captured = {}
original_fit = trainer_mod.Trainer.fit


def fit(self):
    result = original_fit(self)
    captured["nets"] = {k: {n: t.clone() for n, t in v.state_dict().items()} for k, v in self.pipeline.networks.items()}
    return result


trainer_mod.Trainer.fit = fit
train_config(cls, cfg)
rank = dist.get_rank()
torch.save(captured["nets"], f"{out}/rank{rank}.pt")
dist.barrier()
dist.destroy_process_group()
