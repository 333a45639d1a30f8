import pytest

from taskevents import Emitter, MemoryStateStore, StateStore, ValidationError


def test_memory_store_satisfies_the_protocol() -> None:
    assert isinstance(MemoryStateStore(), StateStore)


def test_snapshot_follows_the_lifecycle(emitter: Emitter) -> None:
    emitter.register("aws01", region="eu-west-1")
    idle = emitter.state.snapshot("aws01")
    assert idle is not None
    assert (idle.status, idle.seq, idle.current, idle.last) == ("idle", 0, None, None)
    assert idle.metadata == {"region": "eu-west-1"}

    started = emitter.started("aws01", "change_ip")
    emitter.progress("aws01", 40, stage="execution")
    busy = emitter.state.snapshot("aws01")
    assert busy is not None
    assert busy.status == "busy"
    assert busy.seq == 2
    assert busy.current is not None
    assert busy.current.task_id == started.task_id
    assert busy.current.started_at == started.time
    assert busy.current.progress == {"percent": 40, "stage": "execution"}

    done = emitter.failed("aws01", RuntimeError("refused"))
    idle_again = emitter.state.snapshot("aws01")
    assert idle_again is not None
    assert idle_again.status == "idle"
    assert idle_again.current is None
    last = idle_again.last
    assert last is not None
    assert (last.outcome, last.ended_at, last.started_at) == ("failed", done.time, started.time)
    assert last.error == {"type": "RuntimeError", "message": "refused"}
    assert last.progress == {"percent": 40, "stage": "execution"}
    assert idle_again.to_dict()["last_task"]["outcome"] == "failed"
    assert idle_again.to_dict()["metadata"] == {"region": "eu-west-1"}


def test_unknown_subject_has_no_snapshot(emitter: Emitter) -> None:
    assert emitter.state.snapshot("nope") is None
    assert emitter.state.history("nope", 0) is None


def test_snapshot_all_lists_every_subject(emitter: Emitter) -> None:
    emitter.register("aws02")
    emitter.started("aws01", "change_ip")
    snapshots = emitter.state.snapshot_all()
    assert sorted(snapshots) == ["aws01", "aws02"]
    assert snapshots["aws01"].status == "busy"
    assert snapshots["aws02"].status == "idle"


def test_history_replays_after_a_seq_and_says_when_it_cannot() -> None:
    emitter = Emitter(state=MemoryStateStore(history_size=10))
    emitter.started("aws01", "change_ip")
    for n in range(19):
        emitter.progress("aws01", n)
    state = emitter.state
    assert state.last_seq("aws01") == 20
    assert [e.seq for e in state.history("aws01", 15) or []] == [16, 17, 18, 19, 20]
    assert [e.seq for e in state.history("aws01", 10) or []] == list(range(11, 21))
    assert state.history("aws01", 20) == []
    assert state.history("aws01", 9) is None  # seq 10 is no longer kept
    assert state.history("aws01", 25) is None  # ahead of the store: it restarted


def test_apply_ignores_replayed_events(emitter: Emitter) -> None:
    first = emitter.started("aws01", "change_ip")
    emitter.completed("aws01")
    assert emitter.state.apply(first) is False
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.status == "idle"


def test_a_second_emitter_can_share_the_store() -> None:
    store = MemoryStateStore()
    one, two = Emitter(state=store), Emitter(state=store)
    one.started("aws01", "change_ip")
    event = two.progress("aws01", 50)
    assert event.seq == 2
    with pytest.raises(Exception, match="busy"):
        two.started("aws01", "reboot")


def test_history_size_is_validated() -> None:
    with pytest.raises(ValidationError, match="history_size: expected a positive integer"):
        MemoryStateStore(history_size=0)


def test_state_keeps_copies_of_what_the_caller_passed(emitter: Emitter) -> None:
    result = {"ip": "203.0.113.7", "tags": ["a"]}
    origin = {"user": "alice"}
    emitter.started("aws01", "change_ip", origin=origin)
    emitter.completed("aws01", result)
    result["ip"] = "changed"
    result["tags"].append("b")  # type: ignore[attr-defined]
    origin["user"] = "mallory"
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert snapshot.last is not None
    assert snapshot.last.result == {"ip": "203.0.113.7", "tags": ["a"]}
    history = emitter.state.history("aws01", 0) or []
    assert history[0].data == {"origin": {"user": "alice"}}
