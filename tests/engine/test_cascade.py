import torch

from medgen.engine.commands import build_config, load_trained, train_config
from medgen.engine.cascade import cascade_predict


def test_two_stage_cascade_trains_in_sequence_and_refines(tmp_path):
    cls, cfg = build_config(
        "toy_denoise",
        None,
        ["model.stages=2", "train.iterations=30", "train.val_every=10", "train.progress=off", "model.noise=0.5",
         f"output.root={tmp_path}", "output.name=c"],
    )
    summary = train_config(cls, cfg)
    run = tmp_path / "toy_denoise" / "c"
    assert (run / "stage1" / "checkpoints" / "best.pt").exists()
    assert (run / "stage2" / "checkpoints" / "best.pt").exists()
    assert summary["stage"] == 2
    _, _, stages, _ = load_trained(run)
    assert [s.stage for s in stages] == [1, 2]
    assert stages[1].networks["G"][0].in_channels == 2  # stage 2 sees the image and stage 1's estimate
    case = stages[0].validation_cases()[0]
    preds = cascade_predict(stages, case)
    assert len(preds) == 2
    errors = [float(((p["output"] - case["target"]) ** 2).mean()) for p in preds]
    noisy = float(((case["image"] - case["target"]) ** 2).mean())
    assert errors[0] < noisy and errors[1] < noisy
    # stage 2 received stage 1's output, not the raw image: changing stage 1 changes stage 2's result
    with torch.no_grad():
        stages[0].networks["G"][-1].bias += 1.0
    assert not torch.allclose(cascade_predict(stages, case)[1]["output"], preds[1]["output"])
