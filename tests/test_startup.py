"""What a `check` needs to start: no TorchDynamo for an optimizer step (importing it costs seconds), and the
step taken without it is torch.optim's own step, number for number."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from backprop_verify.reference.torch_engine import OPTIMIZERS, optimizer_step
from backprop_verify.scenarios.catalog import optimizer_options

STEPS = 3


def _trained(name: str, step) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    parameters = [torch.nn.Parameter(torch.randn(4, 3, generator=generator, dtype=torch.float64)),
                  torch.nn.Parameter(torch.randn(3, generator=generator, dtype=torch.float64))]
    optimizer = OPTIMIZERS[name](parameters, 0.05, **optimizer_options(name, {}))
    for t in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss = (parameters[0].sin().sum() + parameters[1].pow(3).sum()) * (t + 1)
        loss.backward()
        step(optimizer)
    return [p.detach().clone() for p in parameters]


@pytest.mark.parametrize("name", [name for name, make in OPTIMIZERS.items() if make is not None])
def test_the_step_without_the_compiler_is_torch_optim_s_step(name):
    plain = _trained(name, lambda optimizer: optimizer.step())
    direct = _trained(name, optimizer_step)
    assert all(torch.equal(a, b) for a, b in zip(plain, direct)), name


def test_a_step_does_not_record_gradients():
    """``step`` runs under no_grad as its decorator would: the parameters stay leaves."""
    parameter = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    parameter.grad = torch.ones(2, dtype=torch.float64)
    optimizer_step(optimizer)
    assert parameter.grad_fn is None and parameter.is_leaf and torch.equal(parameter.detach(), torch.full((2,), 0.9,
                                                                                                       dtype=torch.float64))


def test_running_every_worked_example_with_its_optimizer_leaves_torch_dynamo_unimported():
    """In a fresh interpreter (other tests may import it): the worked examples, trajectories included, and
    the textbook verdicts (a named check minimises a quadratic with torch.optim.SGD)."""
    code = (
        "import sys\n"
        "from backprop_verify import reference\n"
        "from backprop_verify.scenarios.builtin import worked_examples\n"
        "steps = 0\n"
        "for scenario in worked_examples():\n"
        "    steps += scenario.optimizer.steps if scenario.optimizer else 0\n"
        "    reference.run(scenario)\n"
        "assert steps > 0, 'no worked example takes an optimizer step'\n"
        "from backprop_verify.reports.textbook.errata import errata_table\n"
        "errata_table()  # the textbook verdicts a report and check build, named checks included\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", done.stdout + done.stderr


def test_torch_s_optimizer_wrappers_are_left_as_torch_made_them():
    """The switch is told only for the reference's own run: afterwards a program that compiles its optimizers
    in the same process meets torch's wrappers unchanged."""
    from backprop_verify import reference
    from backprop_verify.reference.torch_engine import without_compiler
    from backprop_verify.scenarios.builtin import worked_examples

    def told() -> list[str]:
        return [name for name, attribute in vars(torch.optim.Optimizer).items()
                if hasattr(getattr(attribute, "__wrapped__", None), "__dynamo_disable")]

    wrapped = [name for name, attribute in vars(torch.optim.Optimizer).items()
               if "__dynamo_disable" in getattr(getattr(attribute, "__code__", None), "co_names", ())]
    assert "add_param_group" in wrapped and "zero_grad" in wrapped
    before = told()  # torch's own cache where TorchDynamo already ran in this process
    with without_compiler():
        assert told() == wrapped
    scenario = next(s for s in worked_examples() if s.optimizer is not None)
    reference.run(scenario)
    assert told() == before


def _imported_after_report(tmp_path, *options: str) -> set[str]:
    """Which of matplotlib, torch and pandas a fresh interpreter holds after a small ``report``."""
    code = (
        "import sys\n"
        "from backprop_verify.reports.cli import main\n"
        f"code = main(['report', '--quiet', '--only', 'seed004', '--random', '0', '--random-conv', '0',\n"
        f"             '--random-recurrent', '0', '--random-transformer', '0', '--out', {str(tmp_path)!r},\n"
        f"             *{list(options)!r}])\n"
        "assert code == 0, code\n"
        "print('imported:', *(m for m in ('matplotlib', 'torch', 'pandas') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("imported:")]
    return set(line.split()[1:])


@pytest.mark.subprocess
def test_a_report_without_plots_leaves_matplotlib_unimported(tmp_path):
    """``report --no-plots`` writes the page's heatmaps without matplotlib (0.8 s of its start-up); with
    plots it is imported (so the check can fail)."""
    assert _imported_after_report(tmp_path / "bare", "--no-plots") == {"torch", "pandas"}
    assert _imported_after_report(tmp_path / "plots") == {"matplotlib", "torch", "pandas"}
