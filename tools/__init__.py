"""Tooling around the project (data generation); nothing here is imported by the model,
the dataset readers or the evaluators."""
