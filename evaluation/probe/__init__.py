"""``hear-models probe``: which block of which model knows what (layer-wise probe reports).

The package, by job: :mod:`.layers` (block names and ``--layers``), :mod:`.features`
(every block's features, once per clip, cached), :mod:`.linear` (the linear probe and its
scores), :mod:`.heareval` (heareval's protocol on every layer), :mod:`.report` (tables,
figures, report.md / report.html) and :mod:`.command` (``probe()`` and the command line;
its docstring describes the method and the outputs).
"""

from .command import best_layer_per_class, build_parser, histogram, main, probe, redraw
from .features import Features, LayerEmbedder, extract_features
from .layers import Layer, layer_plan, select_layers
from .linear import (L2_GRID, PROTOCOLS, Standardiser, TaskScorer, _mean, _std, chance, degenerate_text,
                     fit_linear, predict_linear, probe_layer)
from .report import TIE, write_report

__all__ = ["probe", "main", "build_parser", "redraw", "histogram", "best_layer_per_class", "Features",
           "LayerEmbedder", "extract_features", "Layer", "layer_plan", "select_layers", "L2_GRID",
           "PROTOCOLS", "Standardiser", "TaskScorer", "chance", "degenerate_text", "fit_linear",
           "predict_linear", "probe_layer", "TIE", "write_report"]
