"""What a model becomes: a converted program that travels as data."""
