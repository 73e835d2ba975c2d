"""Progress reporting: a bar on a terminal, a few plain log lines elsewhere."""

import logging

from exatrkx_sweeps.progress import progress


def test_off_a_terminal_progress_is_a_few_log_lines(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="exatrkx_sweeps.progress")
    assert list(progress(range(7), "train gnn", "epoch")) == list(range(7))  # stderr is captured
    (line,) = caplog.messages  # the interval (60 s) never passed: only the final line
    assert line.startswith("train gnn: 7/7 epochs in ")
    caplog.clear()
    monkeypatch.setenv("EXATRKX_PROGRESS_EVERY", "0")
    list(progress(range(3), "test", "event"))
    assert [m.split(" in ")[0] for m in caplog.messages] == [f"test: {i}/3 events" for i in (1, 2, 3)]
    assert "s left" in caplog.messages[0] and "s left" not in caplog.messages[-1]


def test_disabled_progress_is_the_items_themselves(caplog):
    caplog.set_level(logging.INFO)
    items = [1, 2]
    assert progress(items, "x", "event", enabled=False) is items and not caplog.messages


def test_a_loop_left_early_says_where_it_stopped(caplog):
    caplog.set_level(logging.INFO, logger="exatrkx_sweeps.progress")
    for epoch in progress(range(10), "train gnn", "epoch"):
        if epoch == 3:
            break  # early stopping
    assert caplog.messages[-1].startswith("train gnn: stopped in epoch 4/10")


def test_a_resumed_loop_counts_the_items_done_before(caplog, monkeypatch):
    """A training resumed after 18 of 24 epochs: its lines say 19/24 to 24/24, its rate
    and time left are those of this run's epochs; an error in epoch 21 stops it there."""
    caplog.set_level(logging.INFO, logger="exatrkx_sweeps.progress")
    monkeypatch.setenv("EXATRKX_PROGRESS_EVERY", "0")
    assert list(progress(range(18, 24), "train gnn", "epoch", done=18)) == list(range(18, 24))
    lines = [m.split(" in ")[0] for m in caplog.messages]
    assert lines == [f"train gnn: {i}/24 epochs" for i in range(19, 25)]
    caplog.clear()
    try:
        for epoch in progress(range(18, 24), "train gnn", "epoch", done=18):
            if epoch == 20:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert caplog.messages[-1].startswith("train gnn: stopped in epoch 21/24, ")
