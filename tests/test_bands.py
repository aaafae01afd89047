"""The reproducibility bands the chapters assert their float figures against."""
import json

import pytest

from minimind.checks import bands
from minimind.checks.bands import BANDS_FILE, derive_band, expect, expect_outside


def test_band_is_the_spread_widened_by_the_spread_on_each_side():
    band = derive_band("x", [1.0, 1.2, 1.1])
    assert band.lo == pytest.approx(0.8) and band.hi == pytest.approx(1.4)
    assert 1.39 in band and 1.41 not in band and 0.79 not in band


def test_a_figure_that_never_moved_gets_a_floor_not_a_point():
    band = derive_band("loss", [2.0, 2.0, 2.0])
    assert band.hi - band.lo == pytest.approx(4e-3)  # 1e-3 of the value on each side
    accuracy = derive_band("acc", [1.0] * 6, n=600)
    assert accuracy.hi == 1.0 and 0.99 < accuracy.lo < 0.999  # two standard errors below 100%, clipped at 1
    wider = derive_band("acc", [0.5] * 6, n=100)
    assert wider.hi - wider.lo > 0.15  # ~2 · 2 · sqrt(0.25 / 104)


def test_proportion_bands_stay_inside_zero_and_one():
    band = derive_band("acc", [0.0, 0.02], n=50)
    assert band.lo == 0.0 and band.hi < 0.2


def _use_bands(monkeypatch, tmp_path, entries):
    path = tmp_path / "bands.json"
    path.write_text(json.dumps({"bands": entries}))
    monkeypatch.setattr(bands, "BANDS_FILE", path)
    bands._bands.cache_clear()
    monkeypatch.delenv("MINIMIND_BANDS_RECORD", raising=False)


def test_expect_passes_inside_and_fails_outside_naming_the_figure(monkeypatch, tmp_path):
    _use_bands(monkeypatch, tmp_path, {"sft.acc": {"lo": 0.5, "hi": 0.7, "min": 0.55, "max": 0.65, "values": {"a": 0.6}}})
    assert expect("sft.acc", 0.6) == 0.6
    with pytest.raises(AssertionError, match=r"sft.acc = 0.8 is outside its reproducibility band \[0.5, 0.7\]"):
        expect("sft.acc", 0.8)
    with pytest.raises(KeyError, match="measure_bands"):
        expect("sft.unknown", 0.6)
    bands._bands.cache_clear()


def test_expect_outside_fails_when_the_technique_off_lands_in_the_band(monkeypatch, tmp_path, capsys):
    _use_bands(monkeypatch, tmp_path, {"dpo.acc": {"lo": 0.9, "hi": 1.0, "min": 0.95, "max": 0.99, "values": {}}})
    expect_outside("dpo.acc", 0.45, "before DPO")
    assert "outside the band" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="cannot tell the technique from its absence"):
        expect_outside("dpo.acc", 0.97, "before DPO")
    bands._bands.cache_clear()


def test_a_proportion_whose_band_is_all_of_zero_to_one_is_reported_not_checked(monkeypatch, tmp_path, capsys):
    assert derive_band("acc", [0.05, 0.95], n=100).spans_every_proportion
    assert not derive_band("acc", [0.4, 0.6], n=100).spans_every_proportion
    assert not derive_band("loss", [-5.0, 5.0]).spans_every_proportion  # not a proportion: a real band
    _use_bands(monkeypatch, tmp_path, {
        "dpo.polite": {"lo": 0.0, "hi": 1.0, "min": 0.02, "max": 0.6, "n": 120, "values": {}},
        "dpo.loss": {"lo": 0.0, "hi": 1.0, "min": 0.02, "max": 0.6, "values": {}}})
    assert expect("dpo.polite", 0.99, n=120) == 0.99
    assert "not checked: dpo.polite is not reproducible — the measured runs read 0.02…0.6" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="outside its reproducibility band"):
        expect("dpo.loss", 1.5)  # a loss's band of [0, 1] still checks
    bands._bands.cache_clear()


def test_record_mode_appends_instead_of_asserting(monkeypatch, tmp_path):
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("MINIMIND_BANDS_RECORD", str(record))
    monkeypatch.setenv("MINIMIND_BANDS_RUN", "seed1-default")
    expect("never.measured", 0.25, n=40)
    expect_outside("never.measured", 0.25, "off")  # nothing to compare with while measuring
    assert json.loads(record.read_text()) == {"name": "never.measured", "value": 0.25, "n": 40, "run": "seed1-default"}


def test_shipped_bands_cover_their_runs_from_three_seeds_and_two_kernel_paths():
    shipped = json.loads(BANDS_FILE.read_text())
    assert shipped["bands"], "no bands shipped"
    for name, entry in shipped["bands"].items():
        runs = entry["values"]
        seeds = {label.split("-")[0] for label in runs}
        kernels = {label.split("-", 1)[1] for label in runs}
        assert len(seeds) >= 3 and len(kernels) >= 2, f"{name}: measured on {sorted(runs)}"
        assert all(entry["lo"] <= value <= entry["hi"] for value in runs.values()), name
        rebuilt = derive_band(name, runs.values(), entry["n"])
        assert (rebuilt.lo, rebuilt.hi) == pytest.approx((entry["lo"], entry["hi"])), name
