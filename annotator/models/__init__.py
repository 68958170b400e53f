"""Model families, how to get their weights and the predictor protocol they share."""
