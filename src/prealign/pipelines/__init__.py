"""End-to-end pipelines built from data, training and evaluation."""
