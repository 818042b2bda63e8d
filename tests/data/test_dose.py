"""Poisson thinning for low-dose PET: units, statistics against theory, determinism, sidecars."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medgen.data.dose import (
    activity_to_counts,
    counts_to_activity,
    read_pet_sidecar,
    simulate_dose_pair,
    simulate_low_dose,
    voxel_volume_ml,
)
from medgen.errors import DataError, MedgenError

N_VOX = 200_000
PARAMS = dict(frame_duration_s=300.0, sensitivity=2e-3, decay_factor=1.25, voxel_volume_ml=0.008)
K = 0.008 * 300.0 * 2e-3 / 1.25  # counts per Bq/mL, by hand


def _within(value, target, se, n_se=5.0):
    assert abs(value - target) < n_se * se, (value, target, se)


def test_counts_units_match_hand_computation_and_invert():
    a = np.array([0.0, 1000.0, 12345.0, -5.0])
    counts = activity_to_counts(a, **PARAMS)
    np.testing.assert_allclose(counts, [0.0, 1000.0 * K, 12345.0 * K, 0.0])
    np.testing.assert_allclose(counts_to_activity(counts, **PARAMS)[:3], a[:3])
    assert voxel_volume_ml((2.0, 2.0, 2.0)) == pytest.approx(0.008)


@pytest.mark.parametrize("fraction", [0.25, 0.1])
def test_expected_input_gives_poisson_of_f_lambda_rescaled(fraction):
    lam = 40.0  # expected full-dose counts per voxel
    activity = np.full(N_VOX, lam / K)
    low, info = simulate_low_dose(activity, fraction, 7, input_is="expected", **PARAMS)
    low_counts = low.astype(np.float64) * K  # = Binomial(Poisson(lam), f) / f = Poisson(f lam) / f
    # Mean: unbiased. Var(Poisson(f lam) / f) = lam / f.
    var_theory = lam / fraction
    _within(low_counts.mean(), lam, np.sqrt(var_theory / N_VOX))
    # Var of a sample variance ~ (2 sigma^4 + kappa4) / n with kappa4 = f lam / f^4 for a scaled Poisson.
    se_var = np.sqrt((2 * var_theory**2 + lam / fraction**3) / N_VOX)
    _within(low_counts.var(ddof=1), var_theory, se_var)
    assert info["simulated"] is True and info["fraction"] == fraction and info["seed"] == 7
    assert info["sensitivity"] == PARAMS["sensitivity"] and info["frame_duration_s"] == 300.0


def test_measured_input_is_thinned_without_a_second_poisson_draw():
    lam, f = 60.0, 0.25  # an (integer) noise-free "measured" image: low counts ~ Binomial(60, f)
    activity = np.full(N_VOX, lam / K)
    low, info = simulate_low_dose(activity, f, np.random.default_rng(3), **PARAMS)
    low_counts = low.astype(np.float64) * K
    var_theory = lam * (1 - f) / f  # Var(Binomial(N, f) / f) given N
    _within(low_counts.mean(), lam, np.sqrt(var_theory / N_VOX))
    _within(low_counts.var(ddof=1), var_theory, var_theory * np.sqrt(2.2 / N_VOX))
    assert info["input_is"] == "measured" and info["seed"] is None


def test_dose_pair_shares_counts_and_scales_variance():
    lam, f = 30.0, 0.25
    full, low, info = simulate_dose_pair(np.full(N_VOX, lam / K), f, 11, **PARAMS)
    fc, lc = full.astype(np.float64) * K, low.astype(np.float64) * K
    _within(fc.mean(), lam, np.sqrt(lam / N_VOX))
    _within(lc.mean(), lam, np.sqrt(lam / f / N_VOX))
    assert fc.var() == pytest.approx(lam, rel=0.03)
    assert lc.var() == pytest.approx(lam / f, rel=0.03)  # 1/f times the full-dose variance
    assert np.cov(fc, lc)[0, 1] == pytest.approx(lam, rel=0.05)  # Cov(N, B(N, f)/f) = Var(N)
    assert np.all(np.abs(fc - np.round(fc)) < 1e-3)  # integer counts
    assert info["input_is"] == "expected"


def test_deterministic_by_seed_and_shape_preserved():
    act = np.random.default_rng(0).uniform(0, 10000, (8, 9, 10)).astype(np.float32)
    a, _ = simulate_low_dose(act, 0.25, 5)
    b, _ = simulate_low_dose(act, 0.25, 5)
    c, _ = simulate_low_dose(act, 0.25, 6)
    assert a.shape == act.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a >= 0)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_bad_fraction_is_refused(bad):
    with pytest.raises(MedgenError, match="fraction"):
        simulate_low_dose(np.ones(4), bad, 0)


def test_bad_parameters_are_refused():
    with pytest.raises(MedgenError, match="sensitivity"):
        activity_to_counts(np.ones(3), sensitivity=0.0)
    with pytest.raises(MedgenError, match="rng"):
        simulate_low_dose(np.ones(3), 0.5, "seven")


def test_real_sidecar(shared_data):
    info = read_pet_sidecar(shared_data / "pet_lowdose" / "amyloid_pet" / "subj01" / "pet.json")
    assert info["units"] == "BQML" and info["units_are_bqml"]
    assert info["injected_activity_mbq"] == pytest.approx(367.8)  # written as 3.678e+08 "MBq": really Bq
    assert info["half_life_s"] == pytest.approx(6586.2)
    assert info["decay_correction"] == "START"
    # This file has no frame timing or decay factor: the defaults are used and said.
    assert info["frame_duration_s"] == 600.0 and "frame_duration_s" in info["defaults_used"]
    assert info["decay_factor"] == 1.0 and "decay_factor" in info["defaults_used"]


def test_sidecar_frames_decay_and_milliseconds(tmp_path):
    p = tmp_path / "pet.json"
    p.write_text(json.dumps({"FrameDuration": [300, 300], "FrameTimesStart": [0, 300],
                             "DecayFactor": [1.1, 1.2], "Units": "Bq/mL",
                             "InjectedRadioactivity": 250.0, "InjectedRadioactivityUnits": "MBq"}))
    info = read_pet_sidecar(p)
    assert info["frame_duration_s"] == 600.0 and info["frame_durations_s"] == [300.0, 300.0]
    assert info["decay_factor"] == 1.1 and info["frame_start_s"] == 0.0
    assert info["injected_activity_mbq"] == 250.0 and info["units_are_bqml"] and not info["defaults_used"]
    p.write_text(json.dumps({"FrameDuration": 600000, "Units": "CNTS"}))
    info = read_pet_sidecar(p)
    assert info["frame_duration_s"] == 600.0 and not info["units_are_bqml"]


def test_unreadable_sidecars_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_pet_sidecar(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json.*not valid JSON"):
        read_pet_sidecar(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match="JSON object"):
        read_pet_sidecar(bad)
    bad.write_text('{"FrameDuration": "long"}')
    with pytest.raises(DataError, match="FrameDuration"):
        read_pet_sidecar(bad)
