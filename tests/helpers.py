"""One helper compares two traces and fails with a readable table."""
from reports.compare import compare


def assert_traces_agree(a, b, dtype, pair, addresses=None):
    rows = compare(a, b, dtype, pair, addresses)
    assert rows, f"{pair}: nothing compared"
    failed = [r for r in rows if not r.passed]
    assert not failed, f"{pair} ({dtype}): {len(failed)} of {len(rows)} addresses disagree:\n" + "\n".join(
        f"  {r.address}: max_abs={r.max_abs:.3e} max_rel={r.max_rel:.3e} > tol={r.tolerance:.1e} {r.note}"
        for r in failed[:20])
    return rows
