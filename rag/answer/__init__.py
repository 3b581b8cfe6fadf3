"""Question (+ history) -> grounded answer: follow-ups, evidence, generation, citation checks."""
