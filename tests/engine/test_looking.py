"""What a person looking at a run sees: TensorBoard scalars and preview images, progress.png with a panel per
loss family, montages with colour bars in one orientation, progress bars on infer and evaluate."""

import numpy as np

from medgen.config import load_config
from medgen.engine.logging import RunLogger, loss_families, progress_bar, spans_decades
from medgen.engine.previews import middle_slices
from medgen.engine.rundir import make_run_dir
from medgen.engine.trainer import Trainer
from medgen.pipelines.toy import ToyConfig, ToyDenoise


def test_tensorboard_holds_the_scalars_and_the_preview_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(ToyConfig, None, ["train.iterations=4", "train.val_every=2", "train.log_every=2",
                                        "train.progress=off", "model.adversarial=true"])
    run_dir = make_run_dir(tmp_path, "toy_denoise", "r")
    Trainer(ToyDenoise(cfg), run_dir).fit()
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"loss_mse", "loss_d", "val_mse"} <= set(tags["scalars"])
    assert {"preview/input", "preview/output", "preview/target", "preview/error"} <= set(tags["images"])
    shots = events.Images("preview/output")
    assert [s.step for s in shots] == [2, 4]  # one per validation
    assert shots[0].width > 1 and shots[0].height > 1


def test_middle_slices_are_oriented_and_scaled_as_the_montage():
    volume = np.zeros((8, 10, 12), np.float32)
    volume[:, :, 11] = 4.0  # the last z: the top row of the x plane, whose second axis (z) points up
    shown = middle_slices({"input": volume, "error": np.abs(volume - 1)})
    assert shown["input"].shape == (12, 10)  # plane x = 4: (y, z) turned a quarter, y left to right
    assert shown["input"][0].min() == 1.0 and shown["input"][1:].max() == 0.0
    assert 0.0 <= shown["error"].min() and shown["error"].max() <= 1.0
    bscan = np.zeros((20, 40), np.float32)
    bscan[2] = 1.0  # a 2D image is shown as stored: row 2 stays row 2
    assert middle_slices({"input": bscan})["input"][2].min() == 1.0


def test_progress_png_has_a_panel_per_loss_family_with_log_axes_where_needed(tmp_path):
    from PIL import Image

    assert loss_families(["loss_d", "loss_g", "loss_gdl", "loss_l1", "loss_g_adv", "loss_adv", "loss_d_b"]) == {
        "generator": ["loss_g", "loss_g_adv", "loss_adv"], "discriminator": ["loss_d", "loss_d_b"],
        "terms": ["loss_gdl", "loss_l1"]}
    assert spans_decades([1e-4, 0.5]) and not spans_decades([0.2, 0.9]) and not spans_decades([-3.0, 1e-4, 10.0])
    logger = RunLogger(tmp_path, total_steps=4, progress="off")
    for step in range(1, 5):
        logger.log(step, {"loss_g": 5.0 / step, "loss_d": 0.7, "loss_l1": 10.0 ** -step})
    logger.log(4, {"psnr": 20.0}, kind="val")
    logger.plot("psnr")
    logger.close()
    width, height = Image.open(tmp_path / "progress.png").size
    assert width > 3 * height  # four panels side by side: generator, discriminator, terms, validation


def test_progress_bars_show_only_when_asked_or_on_a_terminal(capsys):
    bar = progress_bar(3, "infer test", show=True)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert "infer test" in capsys.readouterr().err
    quiet = progress_bar(3, "infer test", show=None)  # stderr is not a terminal under pytest
    quiet.update(3)
    quiet.close()
    assert "infer test" not in capsys.readouterr().err


def test_report_html_is_one_offline_page_with_tables_pictures_and_floors(tmp_path):
    from medgen.engine.previews import save_montage
    from medgen.engine.report_html import write_report_html

    save_montage({"prediction": np.ones((8, 8, 8)), "reference": np.ones((8, 8, 8))}, tmp_path / "c1_output.png")
    text = "\n".join(["# Evaluation: x", "", "- dataset: `/data/<script>alert(1)</script>`", "",
                      "| method | psnr | n |", "|---|---|---|", "| model | 30 [29, 31] | 5 |",
                      "| baseline: histogram | 25 | 5 |", "| floor: target_mean | 20 | 5 |", "",
                      "**WARNING**", "", "![c1_output](c1_output.png)", "![gone](../outside.png)"])
    page = write_report_html(text, tmp_path, title="medgen evaluation: x").read_text()
    assert '<tr class="model">' in page and '<tr class="floor">' in page and '<tr class="baseline">' in page
    assert "<table>" in page and "<th>psnr</th>" in page
    assert "data:image/png;base64," in page and 'src="c1_output.png"' not in page  # the picture is in the page
    assert 'src="../outside.png"' in page  # only files of the report's own folder are read
    assert "<script>" not in page and "&lt;script&gt;" in page  # a name from a dataset stays text
    assert "http://" not in page and "https://" not in page  # nothing fetched: readable offline
