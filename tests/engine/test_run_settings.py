"""Runs keep their own settings: --resume reads the run's config.yaml, records overrides given at resume, refuses
a different -c; a training length given twice is an error that says which to drop."""
import yaml

from medgen.cli import main

BASE = ["train.val_every=2", "train.progress=off", "model.channels=4", "model.size=8"]


def _config(run):
    return yaml.safe_load((run / "config.yaml").read_text())


def test_resume_without_c_reads_the_runs_config_and_records_overrides(tmp_path, capsys):
    assert main(["train", "toy_denoise", "train.iterations=2", *BASE, f"output.root={tmp_path}", "output.name=r"]) == 0
    run = tmp_path / "toy_denoise" / "r"
    capsys.readouterr()
    # no model.channels given now: the run's own config (4 channels) is used, not the default (8)
    assert main(["train", "toy_denoise", "train.iterations=4", f"output.root={tmp_path}", "output.name=r",
                 "--resume"]) == 0
    cfg = _config(run)
    assert cfg["model"]["channels"] == 4 and cfg["train"]["iterations"] == 4  # the override at resume is recorded


def test_resume_with_another_config_is_refused(tmp_path, capsys):
    assert main(["train", "toy_denoise", "train.iterations=2", *BASE, f"output.root={tmp_path}", "output.name=r"]) == 0
    other = tmp_path / "other.yaml"
    other.write_text("model:\n  channels: 16\n")
    capsys.readouterr()
    assert main(["train", "toy_denoise", "-c", str(other), f"output.root={tmp_path}", "output.name=r", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "its own config.yaml" in err and "model.channels" in err and "Traceback" not in err


def test_a_changed_network_at_resume_is_one_clear_line(tmp_path, capsys):
    assert main(["train", "toy_denoise", "train.iterations=2", *BASE, f"output.root={tmp_path}", "output.name=r"]) == 0
    capsys.readouterr()
    assert main(["train", "toy_denoise", "train.iterations=4", "model.channels=16", f"output.root={tmp_path}",
                 "output.name=r", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the network" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_iterations_beside_epochs_is_an_error(tmp_path, capsys):
    assert main(["train", "expression_vae", "train.iterations=2000", f"output.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "train.iterations=2000 would be ignored" in err and "train.epochs=0" in err
