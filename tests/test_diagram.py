"""The figures of chapters "The model" and "Training" that are drawn from the model or the run
itself: the network diagram, the filters' change, and the learning curves with their floors."""

import torch

from alexnet_tutorial.model import AlexNet, layer_table
from alexnet_tutorial.plots import filter_change, learning_curves, network_diagram

PNG = b"\x89PNG"


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_network_diagram_draws_one_box_per_layer_labelled_with_its_shape():
    for model in (AlexNet(), AlexNet(width_mult=0.5)):
        rows = layer_table(model)
        fig = network_diagram(model)
        boxes = [p for ax in fig.axes for p in ax.patches if p.get_gid() == "layer"]
        assert len(boxes) == len(rows) == 8
        labels = texts(fig)
        for row in rows:
            assert row["layer"] in labels
            assert "x".join(str(d) for d in row["output_shape"]) in labels
            assert f"{row['params']:,}" in labels
        assert fig._repr_png_().startswith(PNG)


def test_network_diagram_follows_the_model_not_a_fixed_picture():
    half = texts(network_diagram(AlexNet(width_mult=0.5)))
    assert "16x14x14" in half and "32x14x14" not in half


def test_filter_change_shows_every_filter_before_and_after():
    torch.manual_seed(0)
    before = AlexNet().layer1[0].weight
    fig = filter_change(before, 0.5 * before)
    size_ax, cos_ax = fig.axes
    assert len(size_ax.patches) == 2 * 32 and len(cos_ax.patches) == 32
    heights = [p.get_height() for p in cos_ax.patches]
    assert all(abs(h - 1) < 1e-5 for h in heights)  # only shrunk: the same pattern


def test_learning_curves_draw_each_floor_as_a_labelled_line():
    history = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 0.2, "test_accuracy": 0.9} for e in (1, 2)]
    fig = learning_curves(history, floors={"floor of the smoothed loss": 0.5})
    loss_ax = fig.axes[0]
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()][-1] == "floor of the smoothed loss"
    assert len(loss_ax.lines) == 3
    assert len(learning_curves(history).axes[0].lines) == 2
