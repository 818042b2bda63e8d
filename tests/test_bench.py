import json

import medgen.pipelines._template  # noqa: F401  (registers template_translation)
from medgen.bench import bench_one, format_results, memory_scaling
from medgen.data.phantoms import write_phantom_dataset


def test_bench_one_measures_and_compares(tmp_path):
    root = tmp_path / "d"
    write_phantom_dataset("head", root, n_cases=4, seed=1, shape=(16, 16, 16))
    r = bench_one("template_translation", None, [f"data.dataset={root}", "data.patch_size=[16,16,16]", "model.ngf=4"],
                  steps=2, warmup=1, volume=24)
    for key in ("steps_per_s", "samples_per_s", "voxels_per_s", "data_batches_per_s", "speedup_vs_plain",
                "volume_inference_s", "peak_memory_mb"):
        assert r[key] > 0, key
    assert r["patch"] == [16, 16, 16] and r["amp"] == "None"  # CPU: no autocast
    table = format_results([r, {"pipeline": "x", "error": ["boom"]}])
    assert "template_translation" in table and "error: boom" in table
    json.dumps(r)


def test_memory_scaling_reports_slope():
    rows = memory_scaling(sizes=(16, 24), ngf=4, window=16, window_batch=2)
    assert all(r["peak_rss_mb"] > 0 for r in rows)
    assert "slope_mb_per_mvoxel" in rows[0]


def test_subprocess_passes_overrides(tmp_path):
    from medgen.bench import run_in_subprocess

    r = run_in_subprocess("toy_denoise", None, ["model.size=8", "model.channels=2"], steps=1, warmup=0, volume=0)
    assert "error" not in r, r
    assert r["samples_per_s"] > 0
