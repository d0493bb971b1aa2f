"""Tables and figures rebuilt from run logs and ``reported.csv`` — never from training code.

- ``reported``: the paper's numbers (``reported.csv``), with the dagger for unverified values;
- ``runlogs``: finished run folders read back into a tidy DataFrame;
- ``tables``: reported | reproduced | Δ tables as Markdown, CSV and LaTeX;
- ``figures``: pixAcc / mIoU against a swept knob, PNG and PDF.
"""
