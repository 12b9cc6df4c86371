"""One helper compares two traces and fails with a readable table."""
from backprop_verify.reports.verification.compare import compare


def assert_traces_agree(a, b, dtype, pair, addresses=None):
    rows = compare(a, b, dtype, pair, addresses)
    assert rows, f"{pair}: nothing compared"
    failed = [r for r in rows if not r.passed]
    assert not failed, f"{pair} ({dtype}): {len(failed)} of {len(rows)} addresses disagree:\n" + "\n".join(
        f"  {r.address}: max_abs={r.max_abs:.3e} max_rel={r.max_rel:.3e} > tol={r.tolerance:.1e} {r.note}"
        for r in failed[:20])
    return rows


def layer_trace(layer, output, delta, input_gradient):
    """A one-layer Trace of a hand-written layer after forward and backward: its output,
    the upstream gradient δ, ∂L/∂input and every parameter gradient."""
    from backprop_verify.scenarios.trace import Trace

    trace = Trace("manual")
    trace.put("layers.0.output", output)
    trace.put("layers.0.output.grad", delta)
    trace.put("input.grad", input_gradient)
    for name, gradient in zip(layer.parameter_names, layer.gradients):
        trace.put(f"layers.0.{name}.grad", gradient)
    return trace


def assert_file_rejected(folder, text, field, expected, name="my_example.toml"):
    """Loading ``text`` (str, or bytes written as they are) as ``folder/name``
    fails with "name: field: …expected…"."""
    import pytest

    from backprop_verify.scenarios import ScenarioError, load_scenario

    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{name}: "), message
    if field:
        assert f": {field}: " in message, message
    assert expected in message, message
