"""The toy engine declared to backprop-verify: which classes stand for which catalogue names.

    backprop-verify report --engine toy_engine.adapter:engine
    pytest --bv-engine toy_engine.adapter:engine

Scenarios that need anything else (convolutions, other losses, an optimizer)
are listed as not applicable, with the reason.
"""
from backprop_verify.manual import Engine

from toy_engine.layers import MSE, Identity, Linear, ReLU, Sigmoid

engine = Engine("toy", layers={"linear": Linear},
                activations={"identity": Identity, "sigmoid": Sigmoid, "relu": ReLU},
                losses={"mse": MSE})
