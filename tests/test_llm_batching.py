"""Continuous batching (assistant/llm/batching.py, scheduler.py) against a deterministic fake engine.

The fake's next token depends on every token its KV sequence holds, so a wrong position, a copy
from the wrong sequence or a cell freed too early changes what is written: each generation must
equal the same prompt decoded alone. The fake also checks the engine's own rules (contiguous
positions, at most n_batch tokens a pass, at most n_ctx cells in use).
"""

from __future__ import annotations

import threading
import time

import pytest

from assistant.llm.base import ModelBusy, ReservedLLM
from assistant.llm.batching import Call, DecodeBatch, decode_alone
from assistant.llm.scheduler import BatchScheduler, CostModel

END = 0
LETTERS = "abcdefghijklmnopqrstuvwxyz \n"


def next_token(tokens: list[int]) -> int:
    h = 17
    for t in tokens:
        h = (h * 31 + t) % 1_000_003
    return h % len(LETTERS) or 1  # 0 (END) only where a test's prompt asks for it


class FakeEngine:
    def __init__(self, n_ctx: int = 4096, n_batch: int = 64, delay_s: float = 0.0, end_after: int | None = None):
        self.n_ctx, self.n_batch, self.delay_s, self.end_after = n_ctx, n_batch, delay_s, end_after
        self.cells: dict[int, list[tuple[int, int]]] = {}  # sequence -> (cell id, token) by position
        self._next_cell = 0
        self.passes: list[list[tuple[int, int, int, bool]]] = []
        self.peak_cells = 0

    def tokens(self, seq: int) -> list[int]:
        return [t for _, t in self.cells.get(seq, [])]

    def cached(self):
        return self.tokens(0)

    def keep_cached(self, source, tokens):
        assert self.tokens(source)[: len(tokens)] == list(tokens)
        self.cells[0] = self.cells[source][: len(tokens)]

    def truncate_cached(self, n):
        self.cells[0] = self.cells.get(0, [])[:n]

    def copy(self, source, target, n):
        assert not self.cells.get(target), "copy into a sequence that holds cells"
        assert len(self.cells.get(source, [])) >= n, "copy of positions the source does not hold"
        self.cells[target] = self.cells.get(source, [])[:n]

    def free(self, seq):
        self.cells.pop(seq, None)

    def decode(self, entries, allowed=None):
        assert 0 < len(entries) <= self.n_batch
        assert allowed is None or allowed, "a pass with no held generation passes no `allowed`"
        if self.delay_s:
            time.sleep(self.delay_s)
        self.passes.append(list(entries))
        out = []
        for seq, pos, token, wants in entries:
            held = self.cells.setdefault(seq, [])
            assert pos == len(held), f"sequence {seq}: position {pos} after {len(held)} cells"
            held.append((self._next_cell, token))
            self._next_cell += 1
            if wants:
                tokens = self.tokens(seq)
                token = END if self.end_after and len(tokens) >= self.end_after else next_token(tokens)
                out.append(held_to(token, allowed.get(seq)) if allowed and seq in allowed else token)
        used = len({cell for held in self.cells.values() for cell, _ in held})
        self.peak_cells = max(self.peak_cells, used)
        assert used <= self.n_ctx, f"{used} KV cells in use, n_ctx {self.n_ctx}"
        return out

    def piece(self, token):
        return LETTERS[token].encode()

    def is_end(self, token):
        return token == END


def held_to(token: int, allowed) -> int:
    """The fake's choice among `allowed` token ids: the nearest to its free choice (a real model's
    argmax over the allowed logits)."""
    return min((int(t) for t in allowed), key=lambda t: (abs(t - token), t))


def alone(tokens: list[int], max_tokens: int, stops=("\n",), end_after=None, allowed=None) -> str:
    """What greedy decoding of `tokens` by itself writes (the reference)."""
    tokens, text = list(tokens), ""
    for _ in range(max_tokens):
        token = END if end_after and len(tokens) >= end_after else next_token(tokens)
        token = held_to(token, allowed) if allowed is not None else token
        if token == END:
            break
        tokens.append(token)
        text += LETTERS[token]
        if any(s in text for s in stops):
            return text[: min(text.find(s) for s in stops if s in text)]
    return text


HEAD = list(range(1, 41))  # a template's shared head: 40 tokens
PROMPTS = [HEAD + [100 + i, 200 + i, 300 + i] for i in range(6)]


def collect(pairs) -> dict[int, str]:
    out: dict[int, str] = {}
    ended: list[int] = []
    for index, piece in pairs:
        assert index not in ended, "a piece after its prompt ended"
        if piece is None:
            ended.append(index)
        else:
            out[index] = out.get(index, "") + piece
    return {i: out.get(i, "") for i in ended}


@pytest.fixture
def make_scheduler():
    made = []

    def make(engine=None, **kwargs):
        scheduler = BatchScheduler(engine or FakeEngine(delay_s=0.002), **kwargs)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close()


def run(scheduler, prompts, max_tokens=12, stops=("\n",), reservation=None) -> dict[int, str]:
    call = scheduler.submit(prompts, max_tokens=max_tokens, stops=stops, reservation=reservation)
    return collect(scheduler.results(call))


def in_threads(n, target):
    results, errors = [None] * n, []

    def work(i):
        try:
            results[i] = target(i)
        except Exception as exc:  # a failing caller must fail the test, not vanish with its thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


# --- what is written ----------------------------------------------------------------------------


@pytest.mark.parametrize("stops", [("\n",), ("ab", "q"), ()], ids=["newline", "two-letter stop", "no stop"])
def test_each_prompt_decoded_in_one_batch_writes_what_it_would_alone(stops):
    engine = FakeEngine()
    call = Call(PROMPTS, 20, stops)
    out = collect(pair for pair in decode_alone(engine, call, parallel=4) if isinstance(pair, tuple))
    assert out == {i: alone(p, 20, stops) for i, p in enumerate(PROMPTS)}
    assert all(not any(s in text for s in stops) for text in out.values())
    assert not any(engine.cells.get(seq) for seq in range(1, 5)), "every sequence is freed at the end"


def test_a_generation_held_to_some_tokens_writes_only_those_and_its_neighbours_are_untouched(make_scheduler):
    vowels = [END] + [LETTERS.index(c) for c in "aeiou \n"]
    free = alone(PROMPTS[1], 20)
    assert set(free) - set("aeiou \n"), "the free generation writes other letters: the hold changes something"
    call = Call(PROMPTS[:3], 20, ("\n",), allowed=[None, vowels, None])
    out = collect(pair for pair in decode_alone(FakeEngine(), call, parallel=4) if isinstance(pair, tuple))
    assert out[1] == alone(PROMPTS[1], 20, allowed=vowels) and set(out[1]) <= set("aeiou ")
    assert (out[0], out[2]) == (alone(PROMPTS[0], 20), alone(PROMPTS[2], 20)), "the others in its passes are free"
    scheduler = make_scheduler(parallel=4)
    held = scheduler.submit(PROMPTS[:2], max_tokens=20, stops=("\n",), allowed=[vowels, vowels])
    assert collect(scheduler.results(held)) == {i: alone(p, 20, allowed=vowels) for i, p in enumerate(PROMPTS[:2])}
    with pytest.raises(ValueError, match="allowed has 1 entries for 2 prompts"):
        Call(PROMPTS[:2], 20, ("\n",), allowed=[vowels])


@pytest.mark.parametrize("callers", [1, 4, 8])
def test_concurrent_callers_share_forward_passes_and_each_gets_its_own_answer(make_scheduler, callers):
    engine = FakeEngine(delay_s=0.002)
    scheduler = make_scheduler(engine, parallel=8)
    prompts = [[7, 7, 100 + i, 5, 9] for i in range(callers)]
    results = in_threads(callers, lambda i: run(scheduler, [prompts[i]], max_tokens=16, stops=()))
    assert results == [{0: alone(p, 16, ())} for p in prompts]
    widest = max(len({seq for seq, *_ in p}) for p in engine.passes)
    assert widest == callers
    # One pass reads a prompt, 15 more write 16 tokens; callers together need about as many.
    assert len(engine.passes) <= 16 + 4 * (callers - 1), "one pass per token for all, not per caller"


def test_a_call_arriving_mid_decode_joins_the_running_batch(make_scheduler):
    engine = FakeEngine(delay_s=0.005)
    scheduler = make_scheduler(engine, parallel=4)
    first = scheduler.results(scheduler.submit([PROMPTS[0]], max_tokens=40, stops=()))
    next(first)  # the first is being written
    second = run(scheduler, [PROMPTS[1]], max_tokens=5, stops=())
    assert second == {0: alone(PROMPTS[1], 5, ())}
    assert len(collect(first)[0]) + 1 == 40, "the first went on meanwhile"
    together = [p for p in engine.passes if {s for s, *_ in p} == {1, 2}]
    assert together, "the second was read and written in the same passes as the first"


def test_at_most_parallel_sequences_and_the_rest_wait_for_a_free_one(make_scheduler):
    engine = FakeEngine(delay_s=0.001)
    scheduler = make_scheduler(engine, parallel=3)
    out = run(scheduler, PROMPTS, max_tokens=10, stops=())
    assert out == {i: alone(p, 10, ()) for i, p in enumerate(PROMPTS)}
    assert max(len({s for s, *_ in p}) for p in engine.passes) <= 3
    assert {s for p in engine.passes for s, *_ in p} <= {1, 2, 3}


def test_a_shared_head_is_read_once_and_kept_for_the_next_calls(make_scheduler):
    engine = FakeEngine(delay_s=0.001)
    scheduler = make_scheduler(engine, parallel=8)
    run(scheduler, PROMPTS[:5], max_tokens=4)
    first = scheduler.stats["evaluated_tokens"]
    assert first == len(HEAD) + 5 * 3, "the head once, then each prompt's own tail"
    assert engine.cached()[: len(HEAD)] == HEAD, "sequence 0 keeps the last prompt read, head included"
    assert run(scheduler, [PROMPTS[5]], max_tokens=4) == {0: alone(PROMPTS[5], 4)}
    assert scheduler.stats["evaluated_tokens"] - first == 3, "a later call reads its tail only"


def test_the_last_prompt_read_stays_cached_for_the_next_single_call(make_scheduler):
    scheduler = make_scheduler(FakeEngine(), parallel=2)
    run(scheduler, [PROMPTS[0]], max_tokens=3)
    before = scheduler.stats["evaluated_tokens"]
    assert run(scheduler, [PROMPTS[1]], max_tokens=3) == {0: alone(PROMPTS[1], 3)}
    assert scheduler.stats["evaluated_tokens"] - before == 3, "the head came from sequence 0"


def test_cells_shared_by_copies_count_once_so_more_prompts_fit_together():
    engine = FakeEngine(n_ctx=160)  # 6 prompts of 43 tokens writing 10: 318 cells as copies, 118 shared
    call = Call(PROMPTS, 10, ())
    out = collect(pair for pair in decode_alone(engine, call, parallel=8) if isinstance(pair, tuple))
    assert out == {i: alone(p, 10, ()) for i, p in enumerate(PROMPTS)}
    assert max(len({s for s, *_ in p}) for p in engine.passes) == 6, "all six were admitted at once"
    assert engine.peak_cells <= 160


def test_generations_end_at_the_end_token_and_at_max_tokens(make_scheduler):
    scheduler = make_scheduler(FakeEngine(end_after=len(PROMPTS[0]) + 3), parallel=2)
    out = run(scheduler, [PROMPTS[0]], max_tokens=10, stops=())
    assert out == {0: alone(PROMPTS[0], 10, (), end_after=len(PROMPTS[0]) + 3)} and len(out[0]) == 3


# --- freeing, refusing, giving up ---------------------------------------------------------------


def test_a_caller_that_gives_up_frees_its_sequence_for_a_waiting_call(make_scheduler):
    engine = FakeEngine(delay_s=0.003)
    scheduler = make_scheduler(engine, parallel=1)
    first = scheduler.results(scheduler.submit([PROMPTS[0]], max_tokens=500, stops=()))
    next(first)
    waiting = scheduler.submit([PROMPTS[1]], max_tokens=3, stops=())
    started = time.monotonic()
    first.close()
    assert collect(scheduler.results(waiting)) == {0: alone(PROMPTS[1], 3, ())}
    assert time.monotonic() - started < 2, "the slot came back at the next step, not after 500 tokens"
    assert sum(1 for p in engine.passes if any(s == 1 for s, *_ in p)) < 400


def test_a_full_queue_says_busy_at_once(make_scheduler):
    scheduler = make_scheduler(FakeEngine(delay_s=0.01), parallel=1, max_waiting=3)
    hogs = [scheduler.submit([p], max_tokens=50, stops=()) for p in PROMPTS[:3]]
    with pytest.raises(ModelBusy, match="already wait"):
        scheduler.submit(PROMPTS[3:5], max_tokens=5)
    for call in hogs:
        scheduler.cancel(call)


def test_a_call_not_admitted_by_its_deadline_is_busy_and_leaves_the_queue(make_scheduler):
    scheduler = make_scheduler(FakeEngine(delay_s=0.01), parallel=1, queue_timeout_s=0.2)
    hog = scheduler.results(scheduler.submit([PROMPTS[0]], max_tokens=400, stops=()))
    next(hog)
    late = scheduler.submit([PROMPTS[1]], max_tokens=5)
    with pytest.raises(ModelBusy, match="no room"):
        collect(scheduler.results(late))
    assert not scheduler._waiting, "the busy call left the queue"
    hog.close()


def test_prompts_that_would_overflow_the_kv_cache_wait_for_room(make_scheduler):
    engine = FakeEngine(n_ctx=160, delay_s=0.001)
    scheduler = make_scheduler(engine, parallel=8)
    prompts = [[9, i, 3, 4, 5, 6, 7, 8] * 5 for i in range(6)]  # 40 tokens + 20 written: 2 fit at once
    results = in_threads(6, lambda i: run(scheduler, [prompts[i]], max_tokens=20, stops=()))
    assert results == [{0: alone(p, 20, ())} for p in prompts]
    assert engine.peak_cells <= 160


def test_a_failed_forward_pass_fails_its_callers_and_the_loop_goes_on(make_scheduler):
    class Flaky(FakeEngine):
        fail = True

        def decode(self, entries):
            if self.fail:
                self.fail = False
                raise RuntimeError("ggml said no")
            return super().decode(entries)

    scheduler = make_scheduler(Flaky(), parallel=2)
    with pytest.raises(Exception, match="ggml said no"):
        run(scheduler, [PROMPTS[0]])
    assert run(scheduler, [PROMPTS[1]], max_tokens=3) == {0: alone(PROMPTS[1], 3)}


# --- the model whole ----------------------------------------------------------------------------


def test_exclusive_waits_for_the_admitted_and_holds_back_new_ones(make_scheduler):
    engine = FakeEngine(delay_s=0.003)
    scheduler = make_scheduler(engine, parallel=2)
    writing = scheduler.results(scheduler.submit([PROMPTS[0]], max_tokens=30, stops=()))
    next(writing)
    inside = []
    done = threading.Event()

    def whole():
        with scheduler.exclusive(10):
            inside.append(len(engine.passes))
            with scheduler.exclusive(1):  # re-entrant
                time.sleep(0.05)
            inside.append(len(engine.passes))
        done.set()

    t = threading.Thread(target=whole)
    t.start()
    time.sleep(0.02)
    later = scheduler.submit([PROMPTS[1]], max_tokens=3, stops=())
    assert len(collect(writing)[0]) + 1 == 30  # the admitted one finishes first
    assert collect(scheduler.results(later)) == {0: alone(PROMPTS[1], 3, ())}
    t.join(5)
    assert done.is_set() and inside[0] == inside[1], "no pass ran while the model was held whole"
    assert all({s for s, *_ in p} != {1, 2} for p in engine.passes), "the later call was not admitted alongside"


def test_exclusive_gives_up_with_busy_after_its_timeout(make_scheduler):
    scheduler = make_scheduler(FakeEngine(delay_s=0.01), parallel=1)
    writing = scheduler.results(scheduler.submit([PROMPTS[0]], max_tokens=300, stops=()))
    next(writing)
    with pytest.raises(ModelBusy, match="stayed busy"):
        with scheduler.exclusive(0.1):
            pass
    assert run(scheduler, [PROMPTS[1]], max_tokens=2, stops=()) == {0: alone(PROMPTS[1], 2, ())}
    writing.close()


# --- admission with a time budget ---------------------------------------------------------------


def test_an_idle_model_grants_the_whole_turn_and_a_loaded_one_fewer_or_none(make_scheduler):
    costs = CostModel(fixed=0.01, per_row=0.01, per_token=0.002)
    scheduler = make_scheduler(FakeEngine(delay_s=0.01), parallel=8, costs=costs)
    idle = scheduler.reserve(2.0, 5)
    assert idle is not None and idle.sequences == 5 and idle.alone, "a lone turn shares with nobody"
    with_peers = scheduler.reserve(2.0, 5, peers=1)
    assert with_peers is not None and not with_peers.alone
    scheduler.release(idle)
    scheduler.release(with_peers)
    hogs = [scheduler.submit([p], max_tokens=200, stops=()) for p in PROMPTS]
    scheduler.avg_written = 200.0
    assert scheduler.reserve(0.5, 5) is None
    loaded = scheduler.estimate_s(5)
    some = scheduler.reserve(loaded * 0.9, 5)
    assert some is not None and 1 <= some.sequences < 5 and not some.alone
    for call in hogs:
        scheduler.cancel(call)


def test_a_burst_of_turns_shares_the_model_instead_of_the_first_taking_all(make_scheduler):
    scheduler = make_scheduler(FakeEngine(), parallel=8, costs=CostModel(fixed=0.01, per_row=0.005, per_token=0.002))
    grants = [scheduler.reserve(3.0, 5) for _ in range(8)]
    sizes = [g.sequences if g else 0 for g in grants]
    assert sizes[:3] == [5, 3, 2], "the first takes all it asks while alone, then each gets a share"
    assert sum(1 for n in sizes if n) >= 5, "taking 5 each, only 2 or 3 turns would have had the model"
    assert sizes[-1] == 0 and scheduler.estimate_s() <= 3.0, "and once the budget is full, a turn goes without"
    for g in grants:
        if g:
            scheduler.release(g)


def test_reservations_count_until_their_calls_are_submitted(make_scheduler):
    scheduler = make_scheduler(FakeEngine(), parallel=8)
    before = scheduler.estimate_s()
    held = scheduler.reserve(10.0, 5)
    assert scheduler.estimate_s() > before, "a reservation is work to come"
    during = scheduler.estimate_s()
    call = scheduler.submit(PROMPTS[:5], max_tokens=4, reservation=held)
    assert held.submitted == 5
    assert scheduler.estimate_s() <= during * 1.5, "its calls replace it, they do not add to it"
    collect(scheduler.results(call))
    scheduler.release(held)
    assert scheduler.estimate_s() == pytest.approx(before)


def test_the_cost_model_learns_the_machines_speed_from_a_few_passes():
    costs = CostModel(fixed=0.01, per_row=0.005, per_token=0.002)
    quiet = costs.seconds(100, 80, 8, 8)
    for rows, tokens in [(1, 0), (8, 0), (4, 96), (0, 200)] * 10:  # every pass takes 3x the shape's time
        costs.observe(tokens, rows, 3 * (0.01 + 0.005 * rows + 0.002 * tokens))
    assert costs.speed == pytest.approx(3, rel=0.05)
    assert costs.seconds(100, 80, 8, 8) == pytest.approx(3 * quiet, rel=0.05)
    assert quiet == pytest.approx(10 * 0.01 + 80 * 0.005 + 100 * 0.002), "8 lanes write 80 tokens in 10 passes"


def test_a_slow_first_pass_does_not_lock_an_idle_model_out(make_scheduler):
    scheduler = make_scheduler(FakeEngine(), parallel=8)
    for _ in range(50):  # reads on a machine busy with something else: every estimate is over budget
        scheduler.costs.observe(240, 1, 30.0)
    assert scheduler.estimate_s(1) > 1.0
    held = scheduler.reserve(1.0, 5)
    assert held is not None and held.sequences == 5, "an idle model grants a lone turn all it asks"
    assert scheduler.reserve(1.0, 5) is None, "but not a second one on top"
    scheduler.release(held)


def test_a_reserved_view_passes_its_reservation_and_forwards_the_rest():
    class Backend:
        model = "m"

        def _stream(self, prompt, **kwargs):
            yield f"{prompt}:{kwargs['reservation']}"

        def _stream_many(self, prompts, **kwargs):
            yield 0, kwargs["reservation"]

    view = ReservedLLM(Backend(), "r1", 3, 12.5)
    assert (list(view.stream("p", max_tokens=2)), list(view.stream_many(["p"], max_tokens=2))) == (["p:r1"], [(0, "r1")])
    assert (view.model, view.granted, view.deadline) == ("m", 3, 12.5)


def test_a_batch_never_admits_past_its_free_sequences():
    engine = FakeEngine()
    batch = DecodeBatch(engine, parallel=2)
    call = Call(PROMPTS[:3], 4, ())
    assert [batch.try_admit(r) for r in call.requests] == [True, True, False]


def test_turns_about_to_ask_get_a_share_of_an_idle_model_too(make_scheduler):
    scheduler = make_scheduler(FakeEngine(), parallel=8)
    grants = {}
    for peers in (0, 1, 7):
        held = scheduler.reserve(3.0, 5, peers=peers)
        grants[peers] = held.sequences
        scheduler.release(held)
    assert grants == {0: 5, 1: 3, 7: 2}, "a lone turn takes all it asks; the first of a burst its share, at least two"


def test_spare_time_work_gives_way_to_the_next_turn_that_reserves_the_model(make_scheduler):
    from assistant.llm.base import ModelBusy

    scheduler = make_scheduler(FakeEngine(delay_s=0.003), parallel=4)
    spare = scheduler.results(scheduler.submit([PROMPTS[0], PROMPTS[1]], max_tokens=500, stops=(), spare=True))
    next(spare)  # being written
    ordinary = scheduler.submit([PROMPTS[2]], max_tokens=400, stops=())  # another caller's work is not spare
    turn = scheduler.reserve(2.0, 5)
    assert turn is not None and turn.sequences == 5, "the spare-time work counts for nothing in the turn's estimate"
    with pytest.raises(ModelBusy, match="gave way"):
        for _ in spare:
            pass
    assert not ordinary.cancelled
    assert collect(scheduler.results(ordinary)) == {0: alone(PROMPTS[2], 400, ())}
    scheduler.release(turn)
    assert run(scheduler, [PROMPTS[3]], max_tokens=5, stops=()) == {0: alone(PROMPTS[3], 5, ())}, "the model goes on"
