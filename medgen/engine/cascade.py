"""Multi-stage models in which stage k takes stage k-1's output as an extra input channel.

pet_lowdose's progressive refinement (Wang et al. 2018) and mr_to_ct's auto-context model (Nie et al. 2017)
both train their stages in sequence and run them in sequence at test time; this module is the one place
that does it. A cascade-capable pipeline reads `self.previous` (the trained earlier stages) and, for
stage k > 1, reads `case["previous"]` (stage k-1's estimate; `Pipeline.with_previous` adds it to the cases
a stage trains and validates on) as an extra input.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medgen.engine.checkpoint import load_checkpoint
from medgen.pipelines.base import PREVIOUS_KEY


@torch.no_grad()
def cascade_predict(stages, case, output_key: str = "output") -> list[dict]:
    """Run the stages in order on one case; returns every stage's prediction (stage 1 first)."""
    predictions = []
    current = case
    for k, stage in enumerate(stages):
        for net in stage.networks.values():
            net.eval()
        prediction = stage.predict_case(current)
        predictions.append(prediction)
        if k + 1 < len(stages):
            current = case.with_arrays(**{PREVIOUS_KEY: prediction[output_key].detach().float().cpu()})
    return predictions


def load_stage_weights(pipeline, checkpoint: Path | dict) -> dict:
    """Load a trained stage's networks (a checkpoint path, or its loaded state) into a freshly built pipeline;
    returns the state. When the run kept an EMA (`train.ema_decay > 0`), its averaged weights replace the
    followed network's: validation scored (and chose `best.pt` with) the EMA copy, so inference must use the
    same weights."""
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    if not pipeline.networks:
        pipeline.networks = {k: v.to(pipeline.device) for k, v in pipeline.build_networks().items()}
    ema = state.get("ema")
    for name, net in pipeline.networks.items():
        if ema is not None and name == pipeline.ema_network:  # AveragedModel's state: "module.*" + "n_averaged"
            net.load_state_dict({k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")})
        else:
            net.load_state_dict(state["networks"][name])
        net.eval()
    pipeline.load_state_dict(state.get("pipeline_state") or {})
    pipeline.checkpoint = {"path": state.get("file_path"), "sha256": state.get("file_sha256"), "step": state.get("step")}
    return state


def stage_dirs(run_dir, n_stages: int) -> list[Path]:
    run_dir = Path(run_dir)
    return [run_dir] if n_stages == 1 else [run_dir / f"stage{k}" for k in range(1, n_stages + 1)]
