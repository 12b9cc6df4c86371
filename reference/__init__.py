"""The PyTorch mirror (autograd, torch.optim) and the finite-difference oracle.

Built from the Scenario alone — never from ``manual/``'s objects or math.
"""
from reference.torch_engine import ACTIVATIONS, LOSSES, OPTIMIZERS, run, set_threads
from reference.fd_oracle import fd_gradient, fd_oracle

__all__ = ["ACTIVATIONS", "LOSSES", "OPTIMIZERS", "run", "set_threads", "fd_oracle", "fd_gradient"]
