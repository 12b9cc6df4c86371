"""A toy NumPy engine with a planted bug, plugged into backprop-verify (docs/engine.md).

    backprop_verify.manual.load_engine("toy_engine.adapter:engine")

``layers``: linear, identity, sigmoid, relu and the mse loss, each with a
hand-written backward; ``adapter``: the ``Engine`` that declares them.
"""
