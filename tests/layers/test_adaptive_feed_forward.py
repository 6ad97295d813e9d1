"""AdaptiveFeedForward: a Transformer feed-forward block with a learned hidden width."""

import numpy as np
import pytest

import keras_awn
from keras_awn.layers import AdaptiveFeedForward
from tests.layer_test_case import run_layer_test


def test_feed_forward_keeps_the_model_dimension_and_its_config():
    block = AdaptiveFeedForward(model_dim=6, initial_units=10, dropout=0.1)
    tokens = np.random.default_rng(0).normal(size=(2, 3, 6)).astype("float32")
    assert tuple(block(tokens).shape) == (2, 3, 6)
    assert block.compute_output_shape((2, 3, 6)) == (2, 3, 6)
    config = block.get_config()
    assert config["model_dim"] == 6 and "output_units" not in config
    clone = AdaptiveFeedForward.from_config(config)
    assert clone.model_dim == 6 and clone.hidden[0].capacity == block.hidden[0].capacity
    with pytest.raises(ValueError, match="Received: dropout"):
        AdaptiveFeedForward(model_dim=6, dropout=-0.1)


def test_layer_contract(tmp_path):
    run_layer_test(
        keras_awn.layers.AdaptiveFeedForward,
        {"model_dim": 8, "initial_units": 8},
        (np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32"),),
        expected_output_shape=(2, 5, 8),
        expected_num_trainable_weights=5,  # hidden kernel, bias, width parameter; output Dense
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
