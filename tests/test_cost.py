"""The paper's cost cells (Tables 2 and 3) reproduced from the model zoo, and the energy model."""
import math

import pytest

from radixsnn.core.ops import ANN_OPS_PER_MAC, ann_ops, table_ops
from radixsnn.experiments.cost import energy_ann, energy_snn, model_cost, model_macs, reference_operations
from radixsnn.errors import RadixSNNError
from radixsnn.experiments.report import TABLE2, TABLE3, matches, printed_value, relative_error, row_cost


pytestmark = pytest.mark.usefixtures("one_thread")


ROWS = TABLE2 + TABLE3


def _cells(row):
    cost = row_cost(row)
    cells = {"operations": (cost.operations, row.operations), "latency": (cost.latency, row.latency)}
    if row.speedup is not None:
        cells["speedup"] = (cost.speedup, row.speedup)
    return cells


def _id(row):
    t = "ANN" if row.is_ann else f"T{row.time_steps}"
    return f"t{row.table}-{row.label.split()[0]}-{row.architecture}-{row.dataset}-{t}"


def test_every_cell_is_covered():
    assert len(TABLE2) == 18 and len(TABLE3) == 8
    assert sum(len(_cells(r)) for r in ROWS) == 18 * 2 + 8 * 3


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_paper_cells_reproduced(row):
    """Within 2 %, or equal at the precision the paper prints (see radixsnn.experiments.report.matches)."""
    for column, (ours, printed) in _cells(row).items():
        assert matches(ours, printed), (column, ours, printed, f"{relative_error(ours, printed):+.2%}")


def test_cells_matched_only_at_printed_precision():
    """The cells that are more than 2 % off but round to the printed value (documented in docs/notebook.md)."""
    loose = sorted(
        (_id(row), column)
        for row in ROWS
        for column, (ours, printed) in _cells(row).items()
        if abs(relative_error(ours, printed)) > 0.02
    )
    assert loose == sorted([
        ("t2-ResNet-18-ResNet-18-cifar10-T8", "latency"), ("t2-ResNet-18-ResNet-18-cifar10-T4", "latency"),
        ("t2-ResNet-18-ResNet-18-cifar100-T8", "latency"), ("t2-ResNet-18-ResNet-18-cifar100-T4", "latency"),
        ("t2-MobileNet-MobileNet-cifar10-T8", "latency"), ("t2-MobileNet-MobileNet-cifar10-T4", "latency"),
        ("t2-MobileNet-MobileNet-cifar100-T8", "latency"), ("t2-MobileNet-MobileNet-cifar100-T4", "latency"),
        ("t2-MobileNet-MobileNet-cifar10-T4", "operations"), ("t2-MobileNet-MobileNet-cifar100-T4", "operations"),
        ("t3-Radix-VGG-9-cifar10-T4", "latency"), ("t3-Radix-ResNet-44-cifar100-T8", "latency"),
    ])


def test_ann_factor_66_is_read_off_table2():
    """Each printed ANN cell bounds ops/MACs to an interval; 66 is the only integer in the
    ResNet-18 and VGG-16 intervals. MobileNet's printed 3.07e9 would need 66.1-66.3 with our 46.35 M
    MACs: the paper's MobileNet count is slightly higher than ours (0.4 % off, within 2 %)."""
    intervals = {}
    for row in (r for r in TABLE2 if r.is_ann and r.dataset == "cifar10"):
        value, unit = printed_value(row.operations)
        macs = model_macs(row.model, row.dataset)
        intervals[row.model] = ((value - unit / 2) / macs, (value + unit / 2) / macs)
    lo = max(intervals["resnet18"][0], intervals["vgg16"][0])
    hi = min(intervals["resnet18"][1], intervals["vgg16"][1])
    assert [k for k in range(1, 200) if lo <= k <= hi] == [ANN_OPS_PER_MAC] == [66]
    assert not intervals["mobilenet"][0] <= 66 <= intervals["mobilenet"][1]
    assert abs(relative_error(ann_ops(model_macs("mobilenet")), "3.07e9")) < 0.005


def test_vgg9_rows_need_the_convolution_only_count():
    """Lee et al.'s full VGG-9 (with the 4096->1024 hidden layer) misses the T=4 cell by 2.5 %."""
    full = model_macs("vgg9", "cifar10", "all")
    assert not matches(table_ops(full, 4), "0.76e9")
    assert not matches(table_ops(full, 100) / reference_operations("cifar10"), "0.92")
    conv = model_macs("vgg9", "cifar10", "conv")
    value, unit = printed_value("19.1e9")
    assert value - unit / 2 <= table_ops(conv, 100) <= value + unit / 2


def test_operation_rules():
    assert table_ops(313_201_664, 8) == 2_505_613_312
    assert ann_ops(10) == 660
    assert reference_operations("cifar10") == 66 * 313_201_664
    cost = model_cost("vgg16", 8)
    assert cost.ann_latency == 1.0
    assert cost.snn_latency == pytest.approx(8 / 66)
    assert model_cost("vgg16", 4, "cifar100").macs == 313_201_664 + 512 * 90
    with pytest.raises(RadixSNNError):
        table_ops(100, 0)
    with pytest.raises(RadixSNNError):
        model_cost("vgg17", 4)
    with pytest.raises(RadixSNNError):
        model_cost("vgg16", 4, "mnist")


def test_energy():
    assert math.isclose(energy_ann(1e9), 4.6e-3)
    assert math.isclose(energy_snn(1e9), 1e-4)
    assert math.isclose(energy_snn(1e9, accumulator_bits=8), 3e-5)
    with pytest.raises(RadixSNNError):
        energy_snn(1e9, accumulator_bits=16)
    cost = model_cost("vgg16", 8)
    assert math.isclose(cost.ann_energy_j, 313_201_664 * 4.6e-12)
    assert math.isclose(cost.snn_energy_j_int32, 8 * 313_201_664 * 0.1e-12)
    assert math.isclose(cost.snn_energy_j_int8, 8 * 313_201_664 * 0.03e-12)
