"""Baselines a method is compared against: each has `fit(training_cases)` and `predict_case(case)`, returning
a prediction in its pipeline's format."""
