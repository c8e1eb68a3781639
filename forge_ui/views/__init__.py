"""The forge's pages and endpoints: one Flask blueprint per module, registered by
`forge_ui.create_app`. What they share (auth, errors, filters, state, diff and blob
rendering) lives beside this package in forge_ui/."""
