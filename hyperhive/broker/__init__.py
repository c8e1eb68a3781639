"""The sqlite message broker, operator questions and their schema (`hive.db`)."""
