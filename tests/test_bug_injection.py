"""The suite must be able to fail: inject a wrong derivative and watch it fail."""
import manual
import manual.activations
import reference
from reports.verification.compare import compare
from scenarios.builtin import worked_examples
from scenarios.components import activation_scenarios


def _inject_wrong_sigmoid_derivative(monkeypatch):
    """Replace σ'(z) = σ(1−σ) by σ — the classic slip."""
    cls = manual.activations.ACTIVATIONS["sigmoid"]
    forward = cls.forward

    def recording_forward(self, z):
        self._injected_a = forward(self, z)
        return self._injected_a

    monkeypatch.setattr(cls, "forward", recording_forward)
    monkeypatch.setattr(cls, "backward", lambda self, grad: grad * self._injected_a)


def _failures(scenario):
    rows = compare(manual.run(scenario), reference.run(scenario), scenario.dtype, "manual-torch")
    return {r.address for r in rows if not r.passed}


def test_wrong_sigmoid_derivative_is_caught(monkeypatch):
    example = next(s for s in worked_examples() if s.name.startswith("seed004"))
    component = next(s for s in activation_scenarios() if s.name.startswith("activation-sigmoid-smooth"))
    assert not _failures(example) and not _failures(component)  # correct engine: all pass

    _inject_wrong_sigmoid_derivative(monkeypatch)
    failed = _failures(example)
    # The forward pass is untouched; every gradient upstream of the sigmoid is wrong.
    assert "loss" not in failed and "layers.1.output" not in failed
    assert {"layers.0.weight.grad", "layers.0.bias.grad", "input.grad", "step1.layers.0.weight"} <= failed
    assert "layers.2.weight.grad" not in failed  # downstream of the bug: still right
    assert "input.grad" in _failures(component)
