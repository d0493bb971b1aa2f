"""encnet — Context Encoding for Semantic Segmentation (Zhang et al., CVPR 2018), reproduced.

Importing the package loads nothing heavy: subpackages (``encnet.nn``, ``encnet.models``,
``encnet.data``, ``encnet.report``...) are imported on demand.
"""

__version__ = "0.1.0"
