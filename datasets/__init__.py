"""Datasets: ScanNet training windows, ScanNet/7-Scenes evaluation sequences, synthetic data."""
