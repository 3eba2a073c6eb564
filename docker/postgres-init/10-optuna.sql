-- The per-cell Optuna studies of every study (optuna_storage), beside MLflow's own database.
CREATE DATABASE optuna OWNER mlflow;
