"""Shared prompt prefixes: the plan made from token ids (a prefix tree within a budget)."""

from __future__ import annotations

from pytest_safeedit.backends.prefix import PrefixPlan, plan_prefixes

PREAMBLE = list(range(100, 120))  # a chat template's 20 tokens
ATTACK = list(range(200, 260))  # an attack template's 60 tokens


def rows() -> list[list[int]]:
    return [
        PREAMBLE + ATTACK + [1, 2, 3],
        PREAMBLE + [7, 8],  # a bare question
        PREAMBLE + ATTACK + [1, 2, 4],
        PREAMBLE + ATTACK + [5, 6],
        PREAMBLE + [9, 9, 9],
        [42] * 30,  # shares nothing
    ]


def starts(plan: PrefixPlan, data: list[list[int]], row: int) -> list[int]:
    return data[row][: plan.shared(row)]


def test_each_row_starts_from_the_deepest_prefix_it_shares() -> None:
    data = rows()
    plan = plan_prefixes(data, budget=10_000)
    assert starts(plan, data, 0) == starts(plan, data, 2) == starts(plan, data, 3) == PREAMBLE + ATTACK
    assert starts(plan, data, 1) == starts(plan, data, 4) == PREAMBLE
    assert plan.of_row[5] is None and plan.shared(5) == 0
    # Each prefix extends the deepest one above it: the preamble is computed once for all.
    lengths = [p.length for p in plan.prefixes]
    assert lengths == sorted(lengths) == [20, 80]
    assert [p.parent for p in plan.prefixes] == [None, 0]
    assert [sorted(p.rows) for p in plan.prefixes] == [[1, 4], [0, 2, 3]]


def test_a_prefix_that_adds_a_few_tokens_to_another_is_not_a_pass_of_its_own() -> None:
    """Rows 0 and 2 share two tokens more than the attack template: computing them again in each row costs
    less than a forward pass of their own; sixteen tokens more make a prefix again."""
    data = rows()
    assert 82 not in [p.length for p in plan_prefixes(data, budget=10_000).prefixes]
    longer = [row[:80] + list(range(300, 316)) + row[80:] if row[:80] == PREAMBLE + ATTACK else row for row in data]
    longer[3] = data[3]
    plan = plan_prefixes(longer, budget=10_000)
    assert [p.length for p in plan.prefixes] == [20, 80, 98]
    assert starts(plan, longer, 0) == starts(plan, longer, 2) == PREAMBLE + ATTACK + list(range(300, 316)) + [1, 2]


def test_a_row_keeps_a_token_to_compute_even_when_another_row_is_the_same() -> None:
    data = [PREAMBLE + ATTACK, PREAMBLE + ATTACK, PREAMBLE + ATTACK + [3]]
    plan = plan_prefixes(data, budget=10_000)
    assert all(0 < plan.shared(row) < len(data[row]) for row in range(3))
    assert plan.shared(0) == plan.shared(1) == len(data[0]) - 1


def test_short_prefixes_and_single_rows_are_not_shared() -> None:
    assert plan_prefixes([PREAMBLE[:10] + [1], PREAMBLE[:10] + [2]], budget=10_000).prefixes == ()
    assert plan_prefixes([PREAMBLE + ATTACK], budget=10_000).prefixes == ()
    assert plan_prefixes([], budget=10_000) == PrefixPlan((), ())


def test_the_budget_keeps_the_prefixes_that_spare_the_most() -> None:
    data = rows()
    plan = plan_prefixes(data, budget=85)  # room for one of the long prefixes, not the preamble as well
    assert [p.length for p in plan.prefixes] == [80]  # 80 tokens for three rows spare more than 82 for two
    assert plan.shared(0) == plan.shared(2) == plan.shared(3) == 80 and plan.shared(1) == 0
    assert plan_prefixes(data, budget=0).prefixes == ()


def test_rows_of_other_weights_do_not_share() -> None:
    data = rows()
    plan = plan_prefixes(data, budget=10_000, groups=["a", "b", "b", "a", "a", "a"])
    assert plan.shared(0) == len(PREAMBLE) + len(ATTACK)  # with row 3, not row 2 (other weights)
    assert plan.shared(2) == len(PREAMBLE)  # with row 1
    assert all(data[p.row][: p.length] == data[r][: p.length] for p in plan.prefixes for r in p.rows)
    groups = ["a", "b", "b", "a", "a", "a"]
    assert all(groups[p.row] == groups[r] for p in plan.prefixes for r in p.rows)


def test_rows_of_other_weights_share_across_groups_below_the_edit() -> None:
    """With ``below`` (the share of layers every group computes alike), rows of every group share a
    prefix; each prefix names the groups it is computed for, its parents' included."""
    data = rows()
    groups = ["a", "b", "b", "a", "a", None]
    plan = plan_prefixes(data, budget=10_000, groups=groups, below=0.5)
    assert plan.across and not plan_prefixes(data, budget=10_000, groups=groups).across
    assert starts(plan, data, 0) == starts(plan, data, 2) == PREAMBLE + ATTACK  # rows of a and b
    assert starts(plan, data, 1) == starts(plan, data, 4) == PREAMBLE
    assert [sorted(g, key=repr) for g in plan.groups(groups)] == [["a", "b"]] * 2
    # Each prefix has rows of a and b under it: it costs half its tokens once and half once per group.
    costs = [round(length * (0.5 + 0.5 * 2)) for length in (20, 80)]
    assert len(plan_prefixes(data, budget=sum(costs), groups=groups, below=0.5).prefixes) == 2
    assert len(plan_prefixes(data, budget=sum(costs) - 1, groups=groups, below=0.5).prefixes) == 1


def test_a_prefix_is_computed_for_the_groups_of_the_prefixes_on_top_of_it() -> None:
    data = [PREAMBLE + ATTACK + [1], PREAMBLE + ATTACK + [2], PREAMBLE + [3], PREAMBLE + [4]]
    plan = plan_prefixes(data, budget=10_000, groups=["x", "x", "y", "y"], below=0.25)
    assert [p.length for p in plan.prefixes] == [20, 80]
    assert plan.prefixes[1].parent == 0 and plan.prefixes[1].rows == (0, 1)
    assert plan.groups(["x", "x", "y", "y"]) == [["y", "x"], ["x"]]  # x starts from the preamble's own
