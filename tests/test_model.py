"""The network: shapes, widths, nonlinearities, dropout, memory layouts, and that it can learn."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnet_tutorial.model import AlexNet, layer_table, summary

WIDTH_1_SHAPES = {
    "layer1": (32, 14, 14), "layer2": (64, 7, 7), "layer3": (128, 7, 7), "layer4": (256, 7, 7),
    "layer5": (256, 3, 3), "fc1": (1024,), "fc2": (512,), "fc3": (10,),
}
# Conv: in * out * 9 + out; linear: in * out + out (chapter "The model" adds them up).
WIDTH_1_PARAMS = {
    "layer1": 320, "layer2": 18_496, "layer3": 73_856, "layer4": 295_168, "layer5": 590_080,
    "fc1": 2_360_320, "fc2": 524_800, "fc3": 5_130,
}


@pytest.mark.parametrize("width_mult", [0.25, 0.5, 1.0, 2.0])
def test_output_is_n_by_10_for_every_width(seeded_model, width_mult):
    model = seeded_model(width_mult=width_mult).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("width_mult", [0.25, 0.5, 2.0])
def test_width_mult_scales_every_channel_and_hidden_width(seeded_model, width_mult):
    # Bug 4: the original accepted width_mult and ignored it.
    rows = {r["layer"]: r["output_shape"] for r in layer_table(seeded_model(width_mult=width_mult))}
    for layer, shape in WIDTH_1_SHAPES.items():
        if layer == "fc3":
            assert rows[layer] == (10,)  # the ten digits never scale
        else:
            assert rows[layer] == (round(shape[0] * width_mult), *shape[1:]), layer


def test_param_count_grows_with_width(seeded_model):
    counts = [sum(p.numel() for p in seeded_model(width_mult=w).parameters()) for w in (0.25, 0.5, 1.0, 2.0)]
    assert counts == sorted(counts) and len(set(counts)) == 4


def test_layer_table_at_width_1_matches_the_hand_computed_shapes_and_params(seeded_model):
    model = seeded_model()
    rows = layer_table(model)
    assert [r["layer"] for r in rows] == list(WIDTH_1_SHAPES)
    assert {r["layer"]: r["output_shape"] for r in rows} == WIDTH_1_SHAPES
    assert {r["layer"]: r["params"] for r in rows} == WIDTH_1_PARAMS
    assert sum(p.numel() for p in model.parameters()) == 3_868_170
    assert summary(model).splitlines()[-1].split()[-1] == "3,868,170"


def test_layer_table_restores_training_mode(seeded_model):
    model = seeded_model().train()
    layer_table(model)
    assert model.training
    model.eval()
    layer_table(model)
    assert not model.training


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="width_mult"):
        AlexNet(width_mult=0)
    with pytest.raises(ValueError, match="dropout"):
        AlexNet(dropout=1.0)


def test_every_conv_layer_and_hidden_fc_layer_ends_in_relu(seeded_model):
    # Bug 3: no ReLU after conv3/conv4 nor between fc1, fc2 and fc3. Measured on the outputs:
    # a layer ending in ReLU never gives a negative value, and gives zeros for some inputs.
    model = seeded_model().eval()
    outputs = {}
    for name, module in model.named_children():
        module.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach().clone()))
    with torch.no_grad():
        model(torch.randn(16, 1, 28, 28))
    for name in ("layer1", "layer2", "layer3", "layer4", "layer5", "fc1", "fc2"):
        assert outputs[name].min() >= 0, f"{name} can output negative values: no ReLU at its end"
        assert (outputs[name] == 0).any(), f"{name} never outputs zero: no ReLU at its end"
    assert outputs["fc3"].min() < 0  # the logits are not rectified
    for name in ("layer1", "layer2", "layer3", "layer4", "layer5"):
        assert isinstance(model.get_submodule(name)[0], nn.Conv2d)
        assert isinstance(model.get_submodule(name)[-1], nn.ReLU)


def test_classifier_is_not_one_affine_map(seeded_model):
    # Without ReLUs, fc3(fc2(fc1(z))) is affine, and an affine map takes midpoints to midpoints.
    model = seeded_model().eval()
    classifier = lambda z: model.fc3(model.fc2(model.fc1(z)))
    torch.manual_seed(1)
    a, b = torch.randn(8, 2304), torch.randn(8, 2304)
    with torch.no_grad():
        gap = classifier((a + b) / 2) - (classifier(a) + classifier(b)) / 2
        scale = classifier(a).abs().mean()
    assert gap.abs().mean() > 0.05 * scale


def test_dropout_is_active_in_training_and_off_in_eval(seeded_model):
    model = seeded_model(dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))
    without = seeded_model(dropout=0.0).train()
    with torch.no_grad():
        assert torch.equal(without(x), without(x))


def test_channels_last_input_gives_the_same_logits(seeded_model):
    # Bug 13: x.view(-1, 256*3*3) fails on a channels_last (non-contiguous) tensor.
    model = seeded_model().eval()
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        got = model(x_cl)
        features = model.features(x_cl)
    assert not features.is_contiguous()  # so .view would have raised here
    assert got.shape == (5, 10)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_overfits_64_real_images(seeded_model, train_sample):
    """A net that cannot learn 64 images by heart has a wiring or gradient bug.

    Dropout is off and the width halved so that this takes seconds; the wiring is the same
    at every width. Adam at 1e-3 gets there in about a dozen steps; 60 leaves a wide margin.
    """
    images, labels = train_sample[0][:64], train_sample[1][:64]
    assert len(labels.unique()) == 10
    model = seeded_model(seed=0, width_mult=0.5, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    accuracy, steps = 0.0, 0
    while accuracy < 1.0 and steps < 60:
        model.train()
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        model.eval()
        with torch.no_grad():
            accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy == 1.0, f"train accuracy {accuracy:.3f} after {steps} steps on 64 images"
