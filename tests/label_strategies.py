"""Hypothesis strategies shared by the metric tests: pairs of label arrays whose classes go missing on either side."""

import numpy as np
from hypothesis import strategies as st


@st.composite
def labelled(draw, *, max_classes: int, free_pools, max_examples: int):
    """(y_true int [N], y_pred int [N], num_classes or None).

    ``num_classes`` is None (labels from a pool drawn by ``free_pools``, any integers) or 1..``max_classes``
    (labels 0..C-1). Each side draws from its own subset of the pool, so classes go missing from y_true, from
    y_pred or from both, and single-class inputs are common.
    """
    num_classes = draw(st.one_of(st.none(), st.integers(1, max_classes)))
    pool = draw(free_pools) if num_classes is None else list(range(num_classes))
    n = draw(st.integers(1, max_examples))
    sides = []
    for _ in range(2):
        support = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True))
        sides.append(np.array(draw(st.lists(st.sampled_from(support), min_size=n, max_size=n)), np.int64))
    return sides[0], sides[1], num_classes
