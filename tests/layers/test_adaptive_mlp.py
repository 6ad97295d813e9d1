"""AdaptiveMLP: a block with fixed outer sizes whose hidden widths are learned."""


import numpy as np
import pytest

import keras_awn
from keras_awn._engine import topology
from keras_awn.layers import AdaptiveMLP
from tests.layer_test_case import run_layer_test


def test_adaptive_mlp_shapes_and_links():
    mlp = AdaptiveMLP(output_units=3, hidden_layers=3, initial_units=[4, 6, 8])
    assert tuple(mlp(np.ones((2, 5), "float32")).shape) == (2, 3)
    assert [layer.active_units for layer in mlp.hidden] == [4, 6, 8]
    links = topology.find_links(mlp)
    assert links[mlp.hidden[0]][0] == [mlp.hidden[1]]
    assert links[mlp.hidden[2]][0] == [mlp.output_layer]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"output_units": 0}, "output_units=0"),
        ({"output_units": 2, "hidden_layers": 0}, "hidden_layers=0"),
        ({"output_units": 2, "hidden_layers": 2, "initial_units": [4]}, "initial_units=\\[4\\]"),
        ({"output_units": 2, "quantile": 2.0}, "quantile=2.0"),
    ],
)
def test_adaptive_mlp_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveMLP(**kwargs)(np.ones((1, 2), "float32"))


def test_layer_contract(tmp_path):
    run_layer_test(
        keras_awn.layers.AdaptiveMLP,
        {"output_units": 3, "hidden_layers": 2, "initial_units": 4},
        (np.random.default_rng(0).normal(size=(4, 5)).astype("float32"),),
        expected_output_shape=(4, 3),
        expected_num_trainable_weights=8,  # 2 x (kernel, bias, width parameter) + output Dense
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
