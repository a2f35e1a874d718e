"""The epoch and resume state's one owner (shardkin.reader.resume), alone."""
import functools
import pickle

import pytest

from shardkin.reader.resume import Progress, ResumePoint


def identity(seed):
    return {"version": 1, "seed": seed}


def progress(seed=0):
    return Progress(functools.partial(identity, seed))


def test_a_state_names_its_settings_epoch_and_workers():
    p = progress()
    p.set_epoch(3)
    assert p.state(3, 2, [5, 4]) == {"version": 1, "seed": 0, "epoch": 3, "num_workers": 2,
                                     "delivered": [5, 4]}
    assert p.state_here() == {"version": 1, "seed": 0, "epoch": 3, "num_workers": 1,
                              "delivered": [0]}
    p.handed_out(3, 1, [7])
    assert p.state_here()["delivered"] == [7]
    p.set_epoch(4)  # progress of another epoch is not this one's
    assert p.state_here()["delivered"] == [0] and p.sets == 2


def test_a_loaded_state_sets_the_epoch_and_is_taken_once_per_worker():
    p = progress()
    p.load(progress().state(2, 2, [5, 4]))
    assert p.epoch == 2 and p.loaded() == ResumePoint(2, 2, (5, 4))
    assert p.delivered(2) == [5, 4] and p.delivered(3) == [0, 0, 0]
    assert p.state_here()["delivered"] == [5, 4]  # before any iteration takes it
    worker = pickle.loads(pickle.dumps(p))  # what a DataLoader worker gets
    assert worker.take(2, 1, 2) == 4 and worker.take(2, 1, 2) == 0
    p.drop_loaded()
    assert p.loaded() is None and p.take(2, 0, 2) == 0


def test_a_state_of_other_settings_or_workers_is_refused():
    with pytest.raises(ValueError, match="seed: saved 1, now 0"):
        progress().load(progress(seed=1).state(0, 1, [3]))
    p = progress()
    p.load(progress().state(0, 2, [3, 3]))
    with pytest.raises(ValueError, match="taken with 2 worker"):
        p.take(0, 0, 3)


def test_set_epoch_drops_a_state_loaded_for_another_epoch():
    p = progress()
    p.load(progress().state(1, 1, [9]))
    p.set_epoch(1)
    assert p.loaded() is not None
    p.set_epoch(2)
    assert p.loaded() is None and p.take(2, 0, 1) == 0
