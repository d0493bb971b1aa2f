"""The paper's experiments: which runs each table and figure needs, training the missing ones, building outputs.

``segmentation`` (Tables 1–4, Figure 5), ``cifar`` (Table 6 and the curves), ``discrepancies`` (the
paper-vs-release ledger, ``configs/discrepancies.yaml``) and ``discrepancies_table`` (its measured effects),
``train_all`` (every script's runs in one pool). The ``reproduce/*.py`` scripts call their ``main``.
"""
