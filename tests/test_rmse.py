"""Coding-error study (paper Fig. 3): streamed residual statistics, quantizer relations, the command."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from radixsnn.experiments.activations import activation_scales, iter_relu_activations
from radixsnn.core.coding import radix_quantize, rate_quantize
from radixsnn.experiments.coding_error import coding_error, radix_pow2_quantize, write_csv
from radixsnn.models import IMAGENET_MEAN, IMAGENET_STD

NORM = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # the input normalization of these test models


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x)))).sum((2, 3))


def _images(n, seed=0):
    return torch.randint(0, 256, (n, 3, 6, 6), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


unit = st.floats(0.0, 1.0, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(x=unit, t=st.integers(1, 12))
def test_radix_read_by_2_pow_T_is_the_rate_grid_of_2_pow_T_steps_below_the_top(x, t):
    # X / 2^T with X in 0..2^T-1 is exactly the 2^T-step rate grid without its top value 1
    v = torch.tensor([x])
    rate = rate_quantize(v, 1 << t)
    expected = torch.clamp(rate, max=1 - 2.0**-t)
    assert torch.equal(radix_pow2_quantize(v, t), expected)


@settings(max_examples=200, deadline=None)
@given(x=unit, t=st.integers(1, 16))
def test_residuals_are_within_half_a_step(x, t):
    v = torch.tensor([x], dtype=torch.float64)
    assert abs(float(radix_quantize(v, t) - v)) <= 0.5 / ((1 << t) - 1) + 1e-12
    assert abs(float(rate_quantize(v, 16 * t) - v)) <= 0.5 / (16 * t) + 1e-12


def test_streamed_statistics_equal_a_direct_computation():
    torch.manual_seed(0)
    model = Tiny().eval()
    images = _images(7)
    # batches of 3 (the last one short) must give what one pass over everything gives
    report = coding_error(model, images, radix_steps=[1, 3, 8], rate_steps=[1, 5, 64], batch_size=3, progress=False, **NORM)
    acts = next(iter_relu_activations(model, images, batch_size=len(images), **NORM))
    scaled = torch.cat([(a / a.max()).flatten().double() for a in acts.values()])
    assert report.activations == scaled.numel()
    assert report.zero_fraction == pytest.approx(float((scaled == 0).double().mean()))
    assert report.clipped_fraction == 0.0
    quant = {"radix": radix_quantize, "radix_pow2": radix_pow2_quantize, "rate": rate_quantize}
    for row in report.rows:
        res = quant[row["coding"]](scaled, row["time_steps"]) - scaled
        assert row["rmse"] == pytest.approx(float(res.pow(2).mean().sqrt()), rel=1e-5)
        assert row["min_residual"] == pytest.approx(float(res.min()), abs=1e-6)
        assert row["max_residual"] == pytest.approx(float(res.max()), abs=1e-6)


def test_one_step_radix_and_rate_coincide():
    model = Tiny().eval()
    report = coding_error(model, _images(4), radix_steps=[1, 2], rate_steps=[1, 2, 3], progress=False, **NORM)
    assert report.rmse("radix", 1) == report.rmse("rate", 1)
    assert report.rmse("radix", 2) == report.rmse("rate", 3)  # both grids are k/3
    assert report.matching_rate_steps(2) <= 3


def test_uniform_values_give_the_textbook_rmse():
    # a ReLU of uniform inputs: RMSE -> step / sqrt(12) (step 1/(2^T-1) radix, 1/T rate)
    class Id(nn.Module):
        def forward(self, x):
            return F.relu(x)

    images = torch.arange(256, dtype=torch.uint8).repeat(3 * 64 * 64 // 256 * 4).view(-1, 3, 32, 32)
    report = coding_error(Id(), images, radix_steps=[4], rate_steps=[16], progress=False, **NORM)
    # the non-zero scaled values are an even grid over (0, 1] (zeros are exact and dilute the RMSE)
    nonzero = math.sqrt(1 - report.zero_fraction)
    assert report.rmse("radix", 4) / nonzero == pytest.approx(1 / 15 / math.sqrt(12), rel=0.05)
    assert report.rmse("rate", 16) / nonzero == pytest.approx(1 / 16 / math.sqrt(12), rel=0.05)


def test_percentile_scale_clips_and_counts():
    torch.manual_seed(0)
    model = Tiny().eval()
    images = _images(6)
    scales = activation_scales(model, images, percentile=90.0, **NORM)
    acts = next(iter_relu_activations(model, images, batch_size=6, **NORM))
    for name, a in acts.items():
        nz = a[a > 0].flatten()
        rank = int(round(0.9 * nz.numel()))
        assert scales[name] == float(nz.kthvalue(rank).values)
    report = coding_error(model, images, radix_steps=[4], rate_steps=[4], percentile=90.0, progress=False, **NORM)
    above = sum(int((a > scales[name]).sum()) for name, a in acts.items())
    assert above > 0
    assert report.clipped_fraction == above / report.activations


def test_csv_lists_every_row(tmp_path):
    report = coding_error(Tiny().eval(), _images(2), radix_steps=[1, 2], rate_steps=[4], progress=False, **NORM)
    write_csv(report, tmp_path / "e.csv")
    lines = (tmp_path / "e.csv").read_text().splitlines()
    assert lines[0] == "coding,time_steps,rmse,min_residual,max_residual"
    assert sorted(line.split(",")[0] + line.split(",")[1] for line in lines[1:]) == sorted(
        ["radix1", "radix2", "radix_pow21", "radix_pow22", "rate4"]
    )


@pytest.mark.cifar
@pytest.mark.pretrained
def test_rmse_command_on_resnet20(tmp_path, cifar10_dir, resnet20_weights):
    import argparse

    from radixsnn.cli import rmse

    parser = argparse.ArgumentParser()
    rmse.register(parser.add_subparsers())
    args = parser.parse_args(["rmse", "--model", "resnet20", "--weights", str(resnet20_weights), "--data-dir", str(cifar10_dir),
                              "--images", "10", "--rate-steps", "1..16,255,256", "--out", str(tmp_path)])
    assert args.func(args) == 0
    summary = json.loads((tmp_path / "coding_error.json").read_text())
    claims = summary["claims"]
    # uniform-grid theory: 1 - 8/255 = 96.9 % at T = 8; radix T = 8 matches rate T = 255
    assert 0.95 < claims["radix_vs_rate_T8_reduction"] < 0.98
    assert claims["rate_steps_matching_radix_T8"] == 255
    assert (tmp_path / "coding_error.png").stat().st_size > 0
    assert len((tmp_path / "coding_error.csv").read_text().splitlines()) == 1 + 16 + 16 + 18
