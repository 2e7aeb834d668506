"""The morning: the report and the e-mail that carries it."""
