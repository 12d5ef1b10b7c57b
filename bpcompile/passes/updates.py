"""The update plan: in what order `step` computes the new params and optimizer state, and
which new values go straight into their arrays. Both backends print this one plan.

A new value is computed into its own array (`W -= LR * d_W`) when nothing computed after it
still reads the old value, through the array itself or a gradient that aliases it. Otherwise
it is computed aside and written at the end (`deferred`). A new value that exists before the
update phase (Adam's first moment is the gradient itself when beta1 = 0; a gradient that is a
param's own values) is copied aside first (`set_aside`), since the updates may overwrite what
it is read from, and written at the end too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..graph.ir import LEAVES, Graph, Op


@dataclass(frozen=True)
class UpdatePlan:
    order: tuple[int, ...]              # nodes computed in the update phase, in order
    in_place: dict[int, int]            # update node -> the leaf it is computed into
    set_aside: tuple[tuple[int, int], ...]  # (value, leaf): copied first, written last
    deferred: tuple[tuple[int, int], ...]   # (value, leaf): computed aside, written last

    def written_last(self) -> list[tuple[int, int]]:
        return [*self.set_aside, *self.deferred]


def plan_updates(graph: Graph, computed: list[int],
                 aliases: dict[int, int] | None = None) -> UpdatePlan:
    """The plan for updating every leaf, given the nodes `computed` before the update phase
    (in order); `aliases` maps a gradient leaf to the node whose storage it reads (in `step`,
    the gradient just computed)."""
    aliases = aliases or {}
    done = set(computed)
    pairs = [(node, leaf) for node, leaf in graph.leaf_updates() if node != leaf]
    order = [i for i in graph.live([node for node, _ in pairs]) if i not in done]
    in_place = _in_place(graph, computed + order, set(order), aliases)
    set_aside = tuple((node, leaf) for node, leaf in pairs
                      if node in done or graph.nodes[node].op in LEAVES)
    deferred = tuple((node, leaf) for node, leaf in pairs
                     if (node, leaf) not in set_aside and in_place.get(node) != leaf)
    return UpdatePlan(tuple(order), in_place, set_aside, deferred)


def _in_place(graph: Graph, order: list[int], updating: set[int],
              aliases: dict[int, int]) -> dict[int, int]:
    """Update node -> the leaf it may overwrite directly: an elementwise update computed in
    the update phase (`updating`), with no later node reading the leaf's old value (itself,
    or through a gradient leaf aliasing it), and written into no other leaf."""
    position = {i: k for k, i in enumerate(order)}
    result: dict[int, int] = {}
    for node, leaf in graph.leaf_updates():
        if graph.nodes[node].op is not Op.ELEMENTWISE or node not in updating \
                or node in result:
            continue
        names = {leaf} | {g for g, target in aliases.items() if target == leaf}
        readers = [i for i in order if names & set(graph.nodes[i].inputs) and i != node]
        if all(position[r] < position[node] for r in readers):
            result[node] = leaf
    return result
