from medgen.demo import run_demo


def test_demo_writes_and_checks_phantoms(tmp_path, capsys):
    assert run_demo(tmp_path / "data", tmp_path / "runs", only=[]) == 0
    out = capsys.readouterr().out
    for kind in ("head", "lesion_domains", "oct", "expression"):
        assert (tmp_path / "data" / kind / "dataset.json").exists()
        assert f"check-data {kind}" in out
    # a second run reuses what is there
    assert run_demo(tmp_path / "data", tmp_path / "runs", only=[]) == 0
    assert "already at" in capsys.readouterr().out
