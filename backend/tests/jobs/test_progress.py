"""Progress as a pure function of training events."""

from __future__ import annotations

from app.jobs.progress import advance, metric_point, public_progress
from app.sft.events import EventKind, TrainingEvent


def _run(events, start=100.0, per_event=1.0):
    progress, now = {}, start
    for kind, payload in events:
        before = dict(progress)
        new = advance(progress, TrainingEvent(kind, payload), now=now, rows_per_step=8)
        assert progress == before  # never changes its input
        progress, now = new, now + per_event
    return progress


def test_a_run_s_progress():
    progress = _run([
        (EventKind.PHASE, {"phase": "loading_model"}),
        (EventKind.TRAINING_STARTED, {"global_step": 0, "max_steps": 4}),
        (EventKind.STEP, {"step": 1, "max_steps": 4, "epoch": 0.25}),
        (EventKind.METRICS, {"step": 1, "loss": 2.0, "learning_rate": 1e-3, "num_tokens": 80.0}),
        (EventKind.STEP, {"step": 2, "max_steps": 4, "epoch": 0.5}),
    ])
    assert progress["phase"] == "training"
    assert (progress["current_step"], progress["max_steps"], progress["percent"]) == (2, 4, 50.0)
    # Training started at t=101, step 2 came at t=104: 2 steps in 3 s, 2 more to go.
    assert progress["steps_per_second"] == 0.667 and progress["samples_per_second"] == 5.34
    assert progress["eta_seconds"] == 3.0 and progress["tokens_seen"] == 80.0
    assert progress["tokens_per_second"] == 26.7
    assert progress["metrics"] == {"loss": 2.0, "learning_rate": 1e-3}
    assert set(public_progress(progress)) & {"started_monotonic", "start_step", "rows_per_step"} == set()


def test_a_resumed_run_counts_rates_from_its_first_step():
    progress = _run([(EventKind.TRAINING_STARTED, {"global_step": 6, "max_steps": 10}),
                     (EventKind.STEP, {"step": 7, "max_steps": 10})])
    assert progress["percent"] == 70.0 and progress["steps_per_second"] == 1.0


def test_the_end_of_run_summary_is_not_a_metrics_point():
    assert metric_point({}, {"step": 4, "train_runtime": 1.0, "epoch": 1.0}, now=0.0) is None
    assert _run([(EventKind.METRICS, {"step": 4, "train_runtime": 1.0, "epoch": 1.0})]) == {}


def test_exit_sets_the_phase_of_a_started_run_only():
    assert _run([(EventKind.EXITED, {"status": "failed"})]) == {}
    assert _run([(EventKind.PHASE, {"phase": "training"}), (EventKind.EXITED, {"status": "stopped"})]) == {
        "phase": "stopped"}


def _steps_at(times: list[float], max_steps: int) -> list[dict]:
    """Progress after each step of a run started at t=0 whose step i ends at times[i]."""
    progress = advance({}, TrainingEvent(EventKind.TRAINING_STARTED, {"global_step": 0, "max_steps": max_steps}),
                       now=0.0)
    snapshots = []
    for step, now in enumerate(times, start=1):
        progress = advance(progress, TrainingEvent(EventKind.STEP, {"step": step, "max_steps": max_steps}), now=now)
        snapshots.append(progress)
    return snapshots


def test_the_eta_waits_for_two_steps_and_follows_the_recent_step_rate():
    # Four slow steps (10 s: warm-up on a busy machine), then 1 s steps: 100 steps in all.
    durations = [10.0] * 4 + [1.0] * 96
    times = [sum(durations[:i + 1]) for i in range(len(durations))]
    snapshots = _steps_at(times, 100)
    assert snapshots[0]["eta_seconds"] is None  # "estimating": one step carries the warm-up
    assert snapshots[1]["eta_seconds"] is not None
    for step in range(9, 99):  # a few fast steps in, within 25 % of the truth from then on
        truth = times[-1] - times[step - 1]
        assert abs(snapshots[step - 1]["eta_seconds"] - truth) <= 0.25 * truth, step


def test_a_lone_slow_step_does_not_move_the_eta():
    durations = [1.0] * 20 + [30.0] + [1.0] * 2  # a checkpoint save at step 21
    times = [sum(durations[:i + 1]) for i in range(len(durations))]
    assert _steps_at(times, 50)[20]["eta_seconds"] == 29.0
    assert "recent_steps" not in public_progress(_steps_at(times, 50)[-1])
