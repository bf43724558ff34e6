"""Custom Keras layers shared by the networks (each module owns one concern)."""
