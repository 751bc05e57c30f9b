"""In-process simulation: many clients, one machine."""
