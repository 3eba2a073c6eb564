"""Each cell's hyper-parameter search: Optuna studies in Optuna's own storage, behind one Tune searcher."""
