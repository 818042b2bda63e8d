import json

import medgen.pipelines._template  # noqa: F401  (registers template_translation)
from medgen.bench import bench_one, fit_memory_slope, format_results, memory_scaling
from medgen.data.phantoms import write_phantom_dataset


def test_bench_one_measures_and_compares(tmp_path):
    root = tmp_path / "d"
    write_phantom_dataset("head", root, n_cases=4, seed=1, shape=(16, 16, 16))
    r = bench_one("template_translation", None, [f"data.dataset={root}", "data.patch_size=[16,16,16]", "model.ngf=4",
                                                 "train.data_on_device=on"],
                  steps=2, warmup=1, volume=24, variants=["fp32", "channels_last"], profile=True)
    for key in ("steps_per_s", "samples_per_s", "voxels_per_s", "data_batches_per_s", "speedup_vs_plain",
                "volume_inference_s", "peak_memory_mb", "loader_margin", "host_loader_batches_per_s",
                "projected_train_h", "first_step_s"):
        assert r[key] > 0, key
    assert r["patch"] == [16, 16, 16] and r["paper_steps"] > 0 and r["data_path"].startswith("on ")
    for name in ("fp32", "channels_last"):  # timed on the same batches, with their ratios
        v = r["variants"][name]
        assert v["step_s"] > 0 and v["vs_default"] > 0 and v["vs_plain"] > 0, v
    for which in ("default", "plain"):  # where the step's time goes, largest first
        ops = r["profile"][which]
        assert ops and ops[0]["self_ms_per_step"] >= ops[-1]["self_ms_per_step"] > 0 and 0 < ops[0]["share"] <= 1
    # train.amp "auto": bf16 autocast on CUDA, none on a CPU (the suite runs on both)
    assert r["amp"] == ("torch.bfloat16" if r["device"].startswith("cuda") else "None"), r["device"]
    table = format_results([r, {"pipeline": "x", "error": ["boom"]}])
    assert "template_translation" in table and "error: boom" in table
    json.dumps(r)


def test_memory_scaling_measures_one_size_in_a_subprocess():
    (row,) = memory_scaling(sizes=(16,), ngf=4, window=16, window_batch=2)  # one subprocess: seconds
    assert row["size"] == 16 and row["peak_rss_mb"] >= row["rss_before_mb"] > 0, row
    assert "slope_mb_per_mvoxel" not in row  # one size gives no line


def test_memory_slope_is_the_least_squares_line():
    rows = [{"size": 100, "peak_rss_mb": 1010.0}, {"size": 200, "peak_rss_mb": 1080.0}, {"size": 64, "error": ["x"]}]
    fit_memory_slope(rows)
    # (1080 - 1010) MB over (8 - 1) million voxels: 10 MB per Mvoxel, through 1000 MB at zero
    assert all(abs(r["slope_mb_per_mvoxel"] - 10.0) < 1e-9 and abs(r["intercept_mb"] - 1000.0) < 1e-6 for r in rows)


def test_subprocess_passes_overrides(tmp_path):
    from medgen.bench import run_in_subprocess

    r = run_in_subprocess("toy_denoise", None, ["model.size=8", "model.channels=2"], steps=1, warmup=0, volume=0,
                          extra_args=["--flops"])
    assert "error" not in r, r
    assert r["samples_per_s"] > 0
    # three 3x3 convolutions on 8x8 (1->2, 2->2, 2->1 channels): forward 2 x 64 x 9 x (2 + 4 + 2) multiply-adds,
    # backward twice that less the first layer's input gradient (the input needs none)
    forward = 2 * 64 * 9 * (2 + 4 + 2)
    assert r["step_gflop"] * 1e9 == forward + 2 * forward - 2 * 64 * 9 * 2
    assert r["flops_counted_by"] == "FlopCounterMode"


def test_subprocess_timeout_is_an_error_row():
    from medgen.bench import run_in_subprocess

    r = run_in_subprocess("toy_denoise", None, [], steps=1, warmup=0, volume=0, timeout=0.01)
    assert r == {"pipeline": "toy_denoise", "error": ["timed out after 0.01 s"]}


def test_bench_one_samples_a_finite_dataset_across_epochs(tmp_path):
    """A finite dataset (expression_vae's samples) smaller than the measured batches: the bench reads it the
    way the trainer does (StepSampler, a new permutation per epoch) instead of indexing past its end."""
    data = write_phantom_dataset("expression", tmp_path / "expr", n_cases=40, seed=1, n_genes=30).parent
    r = bench_one("expression_vae", None, [f"data.dataset={data}", "model.latent_dim=4", "train.batch_size=20",
                                           "data.n_features=30"], steps=2, warmup=1, volume=0, plain=False)
    # 40 cases, 10 % test: 36 training samples, while 3 steps x 20 = 60 sample reads are needed
    assert r["steps_per_s"] > 0 and r["data_batches_per_s"] > 0
