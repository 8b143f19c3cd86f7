"""The replica's pure parts on hand-built sequence tables: a batch's prefill shape, a decode
span on the free blocks, and applying an iteration to the sequences."""
from llmos_sim.serving.iteration import IterationPlan, advance, prefill_shape, span_on_free_blocks
from llmos_sim.serving.view import SeqTable


def table(*rows):
    """Rows ``(rid, prompt, output, computed, generated, blocks[, done])``."""
    t = SeqTable()
    t.append([(r[0], r[1], r[2], r[3], r[4], r[5], i, 0, 0, 0.0, r[6] if len(r) > 6 else False)
              for i, r in enumerate(rows)])
    return t


def test_prefill_shape_counts_pairs_context_and_the_rows_that_emit():
    # row 0: a 4-token chunk after 0 cached of an 8-token prompt: 0·4 + 4·5/2 = 10 pairs, no token yet
    # row 1: the last 3 tokens of a 10-token prompt after 7: 3·7 + 3·4/2 = 27 pairs, emits
    # row 2: decoding (not in ``pre``): not counted
    tokens, pre = [4, 3, 1], [0, 1]
    assert prefill_shape(tokens, pre, [8, 10, 5], [0, 0, 2], [0, 7, 6]) == (37, 7, 1)
    assert prefill_shape(tokens, [], [8, 10, 5], [0, 0, 2], [0, 7, 6]) == (0, 0, 0)


def test_a_decode_span_stops_where_its_blocks_no_longer_fit():
    # blocks of 4: rows at 7 and 8 tokens holding 2 blocks each; k iterations need
    # ceil((7+k)/4)-2 + ceil((8+k)/4)-2 blocks: k=1: 1, k=2..4: 2, k=5: 3, k=6..8: 4, k=10: 6
    assert span_on_free_blocks([7, 8], [2, 2], 10, 4, free=100) == 10
    assert span_on_free_blocks([7, 8], [2, 2], 10, 4, free=2) == 4
    assert span_on_free_blocks([7, 8], [2, 2], 10, 4, free=3) == 5
    assert span_on_free_blocks([7, 8], [2, 2], 10, 4, free=4) == 8
    assert span_on_free_blocks([7, 8], [2, 2], 10, 4, free=1) == 1


def test_advance_a_mixed_iteration_emits_first_tokens_and_finds_finishes():
    # rid 5 finishes its 6-token prompt (first token); rid 6 decodes its last token; rid 7 is
    # mid-prompt; rid 8 sits out
    t = table((5, 6, 3, 2, 0, 1), (6, 4, 2, 4, 1, 1), (7, 10, 4, 0, 0, 0), (8, 4, 4, 5, 2, 2))
    seen = []
    first, fin = advance(t, IterationPlan(0.1, [4, 1, 5, 0], 1, False, True, False),
                         lambda rid, c: seen.append((rid, c)), {7})
    assert first == [5] and fin == [1]
    assert t.computed == [6, 5, 5, 5] and t.generated == [1, 2, 0, 2]
    assert seen == [(7, 5)]


def test_advance_a_pure_decode_span_adds_k_to_every_live_row():
    t = table((1, 4, 10, 6, 3, 1), (2, 4, 5, 5, 2, 1))
    first, fin = advance(t, IterationPlan(1.0, [1, 1], 3, False, True, True))
    assert first == [] and fin == [1]  # rid 2 reached its 5 tokens
    assert t.computed == [9, 8] and t.generated == [6, 5]
    # with a held (done) row, only the live rows advance; it is never reported again
    t = table((1, 4, 10, 6, 3, 1), (2, 4, 2, 5, 2, 1, True))
    t.n_done = 1
    first, fin = advance(t, IterationPlan(1.0, [1, 1], 2, True, True, True))
    assert fin == [] and t.computed == [8, 5] and t.generated == [5, 2]


def test_advance_without_may_finish_skips_the_finish_scan():
    t = table((1, 4, 2, 4, 1, 1))
    assert advance(t, IterationPlan(0.1, [1], 1, False, False, True)) == ([], [])
    assert t.generated == [2]
