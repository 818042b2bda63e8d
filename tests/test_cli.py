import subprocess
import sys

from medgen.cli import main


def test_help_imports_no_heavy_modules():
    code = "import sys, medgen.cli; medgen.cli.build_parser(); assert 'torch' not in sys.modules and 'monai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toy_denoise" in out and "networks:" in out


def test_train_and_errors_are_one_line(tmp_path, capsys):
    rc = main(["train", "toy_denoise", "train.iterations=4", "train.val_every=2", "train.progress=off",
               f"output.root={tmp_path}", "output.name=a"])
    assert rc == 0
    assert (tmp_path / "toy_denoise" / "a" / "checkpoints" / "last.pt").exists()
    capsys.readouterr()
    # reusing the run directory, a bad key and an unknown pipeline: one clear line each, exit code 2
    for argv, expected in [
        (["train", "toy_denoise", f"output.root={tmp_path}", "output.name=a"], "already exists"),
        (["train", "toy_denoise", "train.iteratons=3"], "did you mean 'iterations'"),
        (["train", "toy_denoize"], "did you mean 'toy_denoise'"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
    # resume continues to a larger step count
    assert main(["train", "toy_denoise", "train.iterations=6", "train.val_every=2", "train.progress=off",
                 f"output.root={tmp_path}", "output.name=a", "--resume"]) == 0
    import torch

    assert torch.load(tmp_path / "toy_denoise" / "a" / "checkpoints" / "last.pt", weights_only=True)["step"] == 6


def test_overrides_may_follow_options():
    import argparse

    from medgen.cli import parse_with_overrides

    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--resume", action="store_true")
    args = parse_with_overrides(parser, ["-c", "x.yaml", "a.b=1", "--resume", "c=2"])
    assert args.config == "x.yaml" and args.resume and args.overrides == ["a.b=1", "c=2"]
    import pytest

    with pytest.raises(SystemExit):  # anything else is still an error
        parse_with_overrides(parser, ["-c", "x.yaml", "a=1", "--bogus"])
