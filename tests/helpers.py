"""One helper compares two traces and fails with a readable table."""
from reports.verification.compare import compare


def assert_traces_agree(a, b, dtype, pair, addresses=None):
    rows = compare(a, b, dtype, pair, addresses)
    assert rows, f"{pair}: nothing compared"
    failed = [r for r in rows if not r.passed]
    assert not failed, f"{pair} ({dtype}): {len(failed)} of {len(rows)} addresses disagree:\n" + "\n".join(
        f"  {r.address}: max_abs={r.max_abs:.3e} max_rel={r.max_rel:.3e} > tol={r.tolerance:.1e} {r.note}"
        for r in failed[:20])
    return rows


def assert_file_rejected(folder, text, field, expected, name="my_example.toml"):
    """Loading ``text`` (str, or bytes written as they are) as ``folder/name``
    fails with "name: field: …expected…"."""
    import pytest

    from scenarios import ScenarioError, load_scenario

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
