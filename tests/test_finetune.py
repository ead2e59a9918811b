"""The default method's job: runs in order, a progress line per run with an ETA."""

from tljax.methods.finetune import job_progress


def test_job_progress_counts_runs_and_estimates_the_rest():
    assert job_progress(0, 3, "full_ft", 0.0) == "run 1 of 3: full_ft (elapsed 0:00)"
    assert job_progress(2, 3, "scratch", 130.0) == "run 3 of 3: scratch (elapsed 2:10, about 1:05 left)"
