"""gumtool: the operator's offline tool for gumshoe databases (migrate, merge, balance, clean,
stats, readdims). Run `gumtool` for the list of commands."""
