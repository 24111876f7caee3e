"""One module per DVC stage: a pure ``run(params) -> metrics`` and a thin ``main``."""
