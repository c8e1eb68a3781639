"""The pure state table of DESIGN.md: which tag may follow which."""

import pytest
from support.hive import SHORT_STATES

from hyperhive.workflow.approvals import parse_tag_refs
from hyperhive.workflow.states import (
    COMPETITOR,
    DECISIONS,
    ORDER,
    PREDECESSOR,
    TERMINAL,
    State,
    current,
    tag_ref,
)

P, A, D, B, OK, F = SHORT_STATES


def test_state_names_are_the_tag_prefixes_of_the_design():
    assert [str(s) for s in State] == [
        "proposal",
        "approved",
        "denied",
        "building",
        "deployed",
        "failed",
    ]


def test_predecessors_are_exactly_the_design_table():
    assert PREDECESSOR == {A: P, D: P, B: A, OK: B, F: B}
    assert P not in PREDECESSOR  # a proposal starts an approval; nothing comes before it


def test_every_state_chains_back_to_a_proposal():
    for state in State:
        seen = [state]
        while seen[-1] in PREDECESSOR:
            seen.append(PREDECESSOR[seen[-1]])
            assert len(seen) <= len(State), f"cycle in PREDECESSOR from {state}"
        assert seen[-1] is P


def test_competitors_are_symmetric_pairs():
    assert COMPETITOR == {A: D, D: A, OK: F, F: OK}
    for state, rival in COMPETITOR.items():
        assert COMPETITOR[rival] is state
        # rivals follow the same state: they are the two outcomes of one step
        assert PREDECESSOR[state] is PREDECESSOR[rival]


def test_terminal_states_have_no_successor():
    assert frozenset({D, OK, F}) == TERMINAL
    assert not [s for s, pred in PREDECESSOR.items() if pred in TERMINAL]
    assert frozenset({A, D}) == DECISIONS


def test_order_runs_every_predecessor_before_its_successor():
    assert sorted(ORDER) == sorted(State) and len(ORDER) == len(State)
    for state, pred in PREDECESSOR.items():
        assert ORDER.index(pred) < ORDER.index(state)


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({P}, P),
        ({P, A}, A),
        ({P, D}, D),
        ({P, A, B}, B),
        ({P, A, B, OK}, OK),
        ({P, A, B, F}, F),
        # retention may have pruned earlier tags: the most advanced one left wins
        ({A}, A),
        ({B, OK}, OK),
        ({F}, F),
    ],
)
def test_current_is_the_most_advanced_state(states, expected):
    assert current(states) is expected


def test_current_of_nothing_is_refused():
    with pytest.raises(ValueError):
        current(set())


def test_tag_ref_names_the_tag_of_a_state_and_id():
    assert tag_ref(P, 1) == b"refs/tags/proposal/1"
    assert tag_ref(F, 120) == b"refs/tags/failed/120"


def test_parse_tag_refs_groups_state_tags_by_id_and_ignores_the_rest():
    shas = {
        b"proposal/1": b"a" * 40,
        b"approved/1": b"b" * 40,
        b"proposal/12": b"c" * 40,
        b"denied/12": b"d" * 40,
        b"v1.0": b"e" * 40,  # a tag outside the state machine
        b"proposal/abc": b"f" * 40,  # not an id
        b"unknown/3": b"1" * 40,  # not a state
        b"proposal/": b"2" * 40,
        b"approved/-4": b"3" * 40,
    }
    assert parse_tag_refs(shas) == {
        1: {P: b"a" * 40, A: b"b" * 40},
        12: {P: b"c" * 40, D: b"d" * 40},
    }
