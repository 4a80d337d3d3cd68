"""How `tolpipe status` explains jobs cancelled before they ran, when sacct's record has no
reason (slurmdbd stores the pending reason only if it arrived before the cancel)."""

from __future__ import annotations

from pipeline.slurm_jobs import JobState, describe_state, explain_cancellations

NEVER_RAN = JobState("CANCELLED", "0:0", None, started=False)


def chain(*ids: str) -> list[dict]:
    """Jobs each waiting on the one before, as `tolpipe slurm submit` records them."""
    return [{"job_id": j, "depends_on": [ids[i - 1]] if i else []} for i, j in enumerate(ids)]


def test_jobs_after_a_failed_job_never_had_their_dependency_satisfied():
    jobs = chain("1", "2", "3", "4")
    found = {"1": JobState("FAILED", "2:0", "NonZeroExitCode", True), "2": NEVER_RAN, "3": NEVER_RAN,
             "4": NEVER_RAN}  # fmt: skip
    states = explain_cancellations(jobs, found)
    assert [describe_state(states[j]) for j in "234"] == ["cancelled (DependencyNeverSatisfied)"] * 3
    assert states["1"] == found["1"] and found["2"].reason is None  # the input is left as it was


def test_other_cancellations_keep_what_sacct_said():
    jobs = chain("1", "2", "3")
    ran_then_cancelled = JobState("CANCELLED", "0:15", None, started=True)
    found = {"1": JobState("COMPLETED", "0:0", None, True), "2": NEVER_RAN, "3": ran_then_cancelled}
    states = explain_cancellations(jobs, found)
    assert states["2"].reason is None  # its dependency completed: cancelled by someone, not by Slurm
    assert states["3"].reason is None  # it had started


def test_a_job_not_known_to_have_never_run_keeps_what_the_queue_said():
    queued_view = JobState("CANCELLED", None, None)  # from squeue: whether it started is not known
    found = {"1": JobState("FAILED", "1:0", "NonZeroExitCode", True), "2": queued_view}
    assert explain_cancellations(chain("1", "2"), found)["2"].reason is None
