from types import SimpleNamespace

from chaosinject.record import Phases
from chaosinject.record.runrecord import _align_to_the_fault


def _phases():
    p = Phases()
    p.mark("baseline", 0)
    p.mark("fault", 1_000)        # before the engine applied the fault
    p.mark("recovery", 9_000)     # after the run returned (removal done)
    p.close(12_000)
    return p


def test_fault_phase_is_when_the_fault_was_active_and_its_removal_is_in_no_phase():
    p = _phases()
    _align_to_the_fault(p, SimpleNamespace(active_ns=1_500, removal_started_ns=8_000, removed_ns=8_200))
    labels = list(p.label([1_200, 1_500, 7_999, 8_100, 8_200, 11_000]))
    assert labels == ["", "fault", "fault", "", "recovery", "recovery"]


def test_a_result_without_timestamps_leaves_the_live_marks():
    p = _phases()
    _align_to_the_fault(p, SimpleNamespace(active_ns=None, removal_started_ns=None, removed_ns=None))
    assert list(p.label([1_200, 9_000])) == ["fault", "recovery"]
    _align_to_the_fault(p, None)   # the run raised before returning a result
    assert list(p.label([1_200, 9_000])) == ["fault", "recovery"]
