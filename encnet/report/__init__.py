"""Tables and figures rebuilt from run logs and ``reported.csv`` — never from training code.

- ``reported``: the paper's numbers (``reported.csv``, a copy of ``shared/paper/reported.csv``);
- ``runlogs``: finished run folders read back into a tidy DataFrame;
- ``tables``: reported | reproduced | Δ tables and the paper's whole tables, as Markdown, CSV and LaTeX;
- ``figures``: pixAcc / mIoU against a swept knob beside the paper's Figure 5 curve, PNG and PDF.
"""
