"""The approval state machine over tags, the deploy pipeline, hooks and the meta repo."""
