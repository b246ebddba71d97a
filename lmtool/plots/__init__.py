"""Pictures: loss curves, confusion matrices, attention heatmaps. Data in, figure out.

    from lmtool.plots.curves import read_curves, curves_figure
    curves = read_curves(["runs/a", "runs/b"], x="step", smooth=0.6)
    figure = curves_figure(curves)                 # a matplotlib Figure (Agg)
    save_figure(figure, "curves.png", force=False)  # lmtool.plots.files

Files are drawn by matplotlib, which comes with the optional extra `lmtool[plot]`
(lmtool.plots.extra says what to install when it is missing); the terminal's pictures
(lmtool.plots.terminal) need nothing beyond rich, and reading the data
(curves.read_curves) nothing beyond numpy.
"""
