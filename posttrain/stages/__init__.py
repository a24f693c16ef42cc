"""Stage kinds, one module each; `registry.STAGES` maps a recipe's `kind` to the function that runs it, and
`context.StageContext` is what that function is given."""
