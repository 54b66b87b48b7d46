"""The depth maps an evaluation run saves per frame, in the official folder names.

``init_depth``: the scale-2 depth after EST fusion; ``refined_depth``: the refined
full-resolution depth. The one list: the evaluators, the metrics and the demo read it
(also importable as ``utils.metrics.DEPTH_KINDS`` and ``utils.evaluation.DEPTH_KINDS``).
"""

DEPTH_KINDS = ("init_depth", "refined_depth")
