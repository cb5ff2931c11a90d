"""The persona language: YAML with positions, the schema, compiling, templates, lint, diagnostics."""
