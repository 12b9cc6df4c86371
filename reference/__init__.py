"""The PyTorch mirror (autograd, torch.optim) and the finite-difference oracle.

Built from the Scenario alone — never from ``manual/``'s objects or math — by
one network builder, ``reference.network.build_network``.
"""
from backprop_verify.reference.network import LAYERS, Network, build_network
from backprop_verify.reference.torch_engine import ACTIVATIONS, LOSSES, OPTIMIZERS, run
from backprop_verify.reference.fd_oracle import FD_MAX_ENTRIES, fd_applicable, fd_gradient, fd_oracle

__all__ = ["ACTIVATIONS", "LAYERS", "LOSSES", "OPTIMIZERS", "run", "Network", "build_network",
           "fd_oracle", "fd_gradient", "fd_applicable", "FD_MAX_ENTRIES"]
